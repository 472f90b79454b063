"""A small volume of its own for disk-full tests: a tmpfs mounted on a directory (this
needs root and a `mount` that can mount tmpfs; `mount_small_volume` says why not), and
a `Filler` that keeps it full the way another process's writes would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Final

VOLUME_MB: Final = 8
_CHUNK: Final = 64 * 1024
_PAGE: Final = 4096


def mount_small_volume(where: Path, size_mb: int = VOLUME_MB) -> str | None:
    """Mount a `size_mb` tmpfs on `where` (created); why it cannot be done, or None."""
    if shutil.which("mount") is None:
        return "no mount command"
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return f"mount -t tmpfs failed: {done.stderr.strip()}"
    return None


def unmount(where: Path) -> None:
    """Unmount (lazily: a process of the test may still hold a file there)."""
    subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


class Filler:
    """Writes that take every byte of the volume as soon as it is free, until `stop()`:
    the disk stays full even when the gateway gives space back."""

    def __init__(self, volume: Path) -> None:
        self.path = volume / "filler"
        self._stop = threading.Event()
        self._full = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="filler", daemon=True)

    def start(self) -> None:
        """Start filling; return once the volume is full."""
        self._thread.start()
        if not self._full.wait(10):
            raise RuntimeError(f"{self.path.parent} did not fill within 10 s")

    def stop(self) -> None:
        """Stop writing and give the space back."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.path.unlink(missing_ok=True)

    def _fill(self) -> None:
        chunk = _CHUNK
        with self.path.open("wb", buffering=0) as out:
            while not self._stop.is_set():
                try:
                    out.write(b"\0" * chunk)
                except OSError:
                    if chunk > _PAGE:
                        chunk = _PAGE  # down to the last page
                        continue
                    self._full.set()
                    time.sleep(0.005)
