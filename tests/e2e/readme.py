"""README.md's shell examples as steps a test can run, and the rules that compare what a
command printed with the `# →` answer the README shows under it.

Every fenced `sh` block that runs `curl` or `wxgate` is read into steps: a command
(continued over `\\` and over quotes left open), the `# →` lines under it if any
(together one answer), and the README line it starts on. `NAME=value` and
`export NAME=value` lines are variables the test sets, not commands it runs.

An answer is text, optionally followed by one JSON document (from its first `{`).
JSON is compared value by value: the envelope's code and msg exactly; `[...]` stands
for any list and `,...}` for any further keys of an object. Text is compared with
runs of white space made one space; a bare `...` stands for any run of characters.

A word ending in `...` is a placeholder for a value the gateway makes, told by its
beginning: `wxg_...` an API key, `01KB...` a message id (a ULID), `9f86...` a batch id
(32 hex digits), `1153...` a msgid (digits), `2026-...` a time (ISO 8601, UTC). The
first answer that shows a placeholder binds it to what the gateway answered there;
each later answer must show the same value, and later commands get it substituted. A
time is compared by shape only (two events have two times).
"""

from __future__ import annotations

import json
import re
import shlex
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"
ANSWER_MARK = "# → "
ELLIPSIS = "..."

_FENCE = re.compile(r"^```(\S*)\s*$")
_ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Z_][A-Z0-9_]*)=(\S*)\s*(?:#.*)?$")
# A placeholder (`01KB...`) or a bare `...`, in text.
_TEXT_TOKEN = re.compile(r"([0-9A-Za-z_]+)\.\.\.|\.\.\.")
_VARIABLE = re.compile(r"\$(?:(\w+)|\{(\w+)\})")


# -- reading the README ---------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One command of a README example, and the answer shown under it."""

    line: int  # README.md line the command starts on
    command: str
    answer: str | None = None

    @property
    def assignment(self) -> tuple[str, str] | None:
        """(NAME, value) of a `NAME=value` line."""
        match = _ASSIGNMENT.match(self.command)
        return (match.group(1), match.group(2)) if match else None


def _complete(text: str) -> bool:
    """Whether `text` is a whole shell command (no `\\` or quote left open)."""
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text.replace("\\\n", " "), comments=True)
    except ValueError:  # "No closing quotation"
        return False
    return True


def _steps(first_line: int, lines: list[str]) -> Iterator[Step]:
    pending: list[str] = []
    step: Step | None = None
    for offset, line in enumerate(lines):
        if pending:
            pending.append(line)
        elif line.startswith(ANSWER_MARK):
            assert step is not None, f"README.md:{first_line + offset}: an answer to nothing"
            shown = line.removeprefix(ANSWER_MARK).strip()
            answer = shown if step.answer is None else f"{step.answer}\n{shown}"
            step = Step(step.line, step.command, answer)
            continue
        elif line.strip() and not line.lstrip().startswith("#"):
            if step is not None:
                yield step
                step = None
            pending = [line]
            start = first_line + offset
        if pending and _complete("\n".join(pending)):
            step, pending = Step(start, "\n".join(pending)), []
    assert not pending, f"README.md:{first_line}: a command is left open"
    if step is not None:
        yield step


def sh_blocks(path: Path = README) -> list[list[Step]]:
    """The steps of every `sh` block that runs curl or wxgate, in README order."""
    blocks, lines, start, language = [], [], 0, None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = _FENCE.match(line)
        if fence and language is None:
            language, start, lines = fence.group(1), number + 1, []
        elif fence:
            if language == "sh" and re.search(r"(^|\s|/)(curl|wxgate) ", "\n".join(lines)):
                blocks.append(list(_steps(start, lines)))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


# -- placeholders -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What a placeholder's beginning looks like, and a value it stands for."""

    name: str
    beginning: str  # pattern of the placeholder's text before `...`
    value: str  # pattern of a value
    binds: bool = True


SHAPES = (
    Shape("API key", r"wxg_", r"wxg_[A-Za-z0-9_-]{40,}"),
    Shape("time", r"\d{4}-", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z", binds=False),
    Shape("msgid", r"\d+", r"\d{1,20}"),
    Shape("message id", r"[0-9A-HJKMNP-TV-Z]+", r"[0-9A-HJKMNP-TV-Z]{26}"),
    Shape("batch id", r"[0-9a-f]+", r"[0-9a-f]{32}"),
)


def shape_of(placeholder: str) -> Shape:
    beginning = placeholder.removesuffix(ELLIPSIS)
    for shape in SHAPES:
        if re.fullmatch(shape.beginning, beginning):
            return shape
    raise AssertionError(f"no shape is known for the placeholder {placeholder!r}")


def substitute(command: str, bindings: Mapping[str, str]) -> str:
    """`command` with each placeholder replaced by the value an answer bound it to."""

    def value(match: re.Match[str]) -> str:
        if match.group(1) is None:
            raise AssertionError(f"a bare {ELLIPSIS!r} in a command: {command!r}")
        placeholder = match.group(0)
        if placeholder not in bindings:
            raise AssertionError(f"{placeholder} is used before an answer shows it")
        return bindings[placeholder]

    return _TEXT_TOKEN.sub(value, command)


# -- comparing an answer ---------------------------------------------------------------------


@dataclass
class Comparison:
    """The differences between a shown answer and a printed one, and what it binds."""

    bindings: dict[str, str]
    problems: list[str] = field(default_factory=list)

    def placeholder(self, placeholder: str, actual: Any, where: str) -> None:
        shape = shape_of(placeholder)
        if not isinstance(actual, str) or not re.fullmatch(shape.value, actual):
            self.problems.append(f"{where}: {actual!r} is not a {shape.name}")
            return
        bound = self.bindings.setdefault(placeholder, actual) if shape.binds else actual
        if bound != actual:
            self.problems.append(f"{where}: {actual!r}, but {placeholder} was {bound!r}")

    def json(self, expected: Any, actual: Any, where: str = "$") -> None:
        if isinstance(expected, dict):
            self._object(expected, actual, where)
        elif isinstance(expected, list):
            self._list(expected, actual, where)
        elif isinstance(expected, str) and expected.endswith(ELLIPSIS):
            self.placeholder(expected, actual, where)
        elif type(expected) is not type(actual) or expected != actual:
            self.problems.append(f"{where}: {actual!r}, shown as {expected!r}")

    def _object(self, expected: dict[str, Any], actual: Any, where: str) -> None:
        if not isinstance(actual, dict):
            self.problems.append(f"{where}: {actual!r} is not an object")
            return
        shown = {key: value for key, value in expected.items() if key != ELLIPSIS}
        missing = shown.keys() - actual.keys()
        extra = set() if ELLIPSIS in expected else actual.keys() - shown.keys()
        if missing or extra:
            self.problems.append(f"{where}: keys missing {sorted(missing)}, extra {sorted(extra)}")
        for key in shown:
            if key in actual:
                self.json(shown[key], actual[key], f"{where}.{key}")

    def _list(self, expected: list[Any], actual: Any, where: str) -> None:
        if expected == [ELLIPSIS] and isinstance(actual, list):
            return
        if not isinstance(actual, list) or len(actual) != len(expected):
            self.problems.append(f"{where}: {actual!r}, shown as {expected!r}")
            return
        for index, (shown, item) in enumerate(zip(expected, actual, strict=True)):
            self.json(shown, item, f"{where}[{index}]")

    def text(self, expected: str, actual: str) -> None:
        pattern, groups = self._text_pattern(" ".join(expected.split()))
        found = re.search(pattern, " ".join(actual.split()))
        if found is None:
            self.problems.append(f"no {expected!r} in {actual[:300]!r}")
            return
        for group, placeholder in groups.items():
            self.bindings[placeholder] = found.group(group)

    def _text_pattern(self, expected: str) -> tuple[str, dict[str, str]]:
        parts, groups, end = [], {}, 0
        for match in _TEXT_TOKEN.finditer(expected):
            parts.append(re.escape(expected[end : match.start()]))
            end = match.end()
            placeholder = match.group(0)
            if match.group(1) is None:
                parts.append(".*?")
            elif placeholder in self.bindings:
                parts.append(re.escape(self.bindings[placeholder]))
            else:
                group = f"p{len(groups)}"
                groups[group] = placeholder
                parts.append(f"(?P<{group}>{shape_of(placeholder).value})")
        parts.append(re.escape(expected[end:]))
        return "".join(parts), groups


def _expand_ellipses(document: str) -> str:
    """JSON with `[...]` and `,...}` spelled as values the comparison knows."""
    document = re.sub(r"\[\s*\.\.\.\s*\]", f'["{ELLIPSIS}"]', document)
    return re.sub(r",\s*\.\.\.\s*}", f',"{ELLIPSIS}":"{ELLIPSIS}"}}', document)


def split_answer(answer: str) -> tuple[str, Any]:
    """(text, JSON document or None) of a shown answer."""
    brace = answer.find("{")
    if brace < 0:
        return answer, None
    try:
        return answer[:brace].strip(), json.loads(_expand_ellipses(answer[brace:]))
    except ValueError:  # braces, but not JSON (a Prometheus line): all text
        return answer, None


def compare(answer: str, printed: str, bindings: Mapping[str, str]) -> Comparison:
    """How `printed` differs from the shown `answer`, binding placeholders on a copy
    of `bindings` (the caller keeps them only when nothing differs)."""
    comparison = Comparison(dict(bindings))
    text, document = split_answer(answer)
    if document is None:
        comparison.text(text, printed)
        return comparison
    brace = printed.find("{")
    if text:
        comparison.text(text, printed[: max(brace, 0)])
    try:
        comparison.json(document, json.loads(printed[brace:]) if brace >= 0 else None)
    except ValueError:
        comparison.problems.append(f"not JSON: {printed[:300]!r}")
    return comparison


# -- curl without curl -----------------------------------------------------------------------


@dataclass(frozen=True)
class CurlRequest:
    """What a `curl` command line sends."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None


def curl_request(command: str, variables: Mapping[str, str]) -> CurlRequest:
    """The request a README `curl` line makes (the options the README uses: -s, -X, -H,
    -d), with `$NAME` taken from `variables`."""
    expanded = _VARIABLE.sub(lambda m: variables[m.group(1) or m.group(2)], command)
    words = shlex.split(expanded.replace("\\\n", " "), comments=True)
    assert words[0] == "curl", command
    method, url, headers, body = None, None, [], None
    options = iter(words[1:])
    for word in options:
        if word == "-s":
            continue
        if word == "-X":
            method = next(options)
        elif word == "-H":
            name, _, value = next(options).partition(":")
            headers.append((name.strip(), value.strip()))
        elif word == "-d":
            body = next(options).encode()
        elif not word.startswith("-") and url is None:
            url = word
        else:
            raise AssertionError(f"curl option {word!r} is not replayed: {command!r}")
    assert url is not None, command
    if body is not None and not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))  # as curl -d
    return CurlRequest(method or ("POST" if body is not None else "GET"), url, tuple(headers), body)


def replay(request: CurlRequest, timeout_s: float = 30.0) -> str:
    """Send `request` as curl would; the answer's body as text, whatever its status."""
    assert request.url.startswith("http://127.0.0.1:"), request.url  # loopback only
    sent = urllib.request.Request(  # noqa: S310 -- loopback http, checked above
        request.url, data=request.body, headers=dict(request.headers), method=request.method
    )
    try:
        with urllib.request.urlopen(sent, timeout=timeout_s) as answer:  # noqa: S310
            return str(answer.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())
