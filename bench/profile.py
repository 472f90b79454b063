"""Sampling profiles of the gateway under benchmark load (py-spy), and their summary.

`python -m bench --profile` attaches `py-spy record` to every gateway process a
case starts and writes collapsed stacks (one line per distinct stack, with its
sample count) under the results directory. `python -m bench.profile FILE...`
prints where the samples were: the functions with the most samples on top of
the stack (self) and anywhere in it (total), and the share per source area.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE_HZ = 250
_AREAS = (
    ("wxgate/api", "wxgate api"),
    ("wxgate/backends", "wxgate backends"),
    ("wxgate/delivery", "wxgate delivery"),
    ("wxgate/wechat", "wxgate wechat"),
    ("wxgate/", "wxgate other"),
    ("starlette/", "starlette"),
    ("fastapi/", "fastapi"),
    ("pydantic", "pydantic"),
    ("uvicorn/", "uvicorn"),
    ("aiohttp/", "aiohttp"),
    ("structlog/", "structlog"),
    ("prometheus_client/", "prometheus"),
    ("sqlite3", "sqlite3"),
    ("asyncio/", "asyncio"),
)


@dataclass
class Recording:
    process: asyncio.subprocess.Process
    path: Path

    @classmethod
    async def attach(cls, pid: int, path: Path) -> Recording | None:
        """py-spy recording `pid` into `path` until the process ends (None: no py-spy)."""
        spy = _py_spy()
        if spy is None:
            return None
        command = [spy, "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--format", "raw",
                   "--output", str(path), "--nonblocking"]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        return cls(process, path)

    async def finish(self) -> None:
        """Wait for the file (py-spy writes it when its target ends, or on SIGINT)."""
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.send_signal(signal.SIGINT)
            await self.process.wait()


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


_FRAME = re.compile(r"^(?P<function>[^ ]+) \((?P<file>[^:]+)(?::\d+)?\)$")


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame.strip())
        if match is not None:
            frames.append((match["function"], match["file"]))
    return frames


def _area(file: str) -> str:
    for needle, area in _AREAS:
        if needle in file:
            return area
    return "other"


def summarise(paths: list[Path], top: int = 25) -> str:
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue  # a line cut short when py-spy was stopped mid-write
            count = int(count_text)
            frames = _frames(stack)
            if not frames:
                continue
            total += count
            function, file = frames[-1]
            own[f"{function} ({_short(file)})"] += count
            areas[_area(file)] += count
            for name in {f"{f} ({_short(p)})" for f, p in frames}:
                anywhere[name] += count
    lines = [f"{total} samples"]
    lines.append("self (top of stack):")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("total (anywhere in the stack):")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in anywhere.most_common(top)]
    lines.append("self by area:")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in areas.most_common()]
    return "\n".join(lines)


def _short(file: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def main() -> None:
    parser = argparse.ArgumentParser(description="Summarise py-spy raw profiles.")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(args.files, args.top))


if __name__ == "__main__":
    main()
