"""Citations of the design and protocol documents point at sections that exist.

Code cites `docs/wechat-protocol.md §N` (ranges such as `§5.2-§5.5` and checklist
items such as `§9 items 1-3` included, and bare `§N` in a file that cites the
document) and `docs/design.md, "<section>"`. Each cited section must be a heading
of its document, so a citation cannot rot when a document changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_DOC = "docs/wechat-protocol.md"
DESIGN_DOC = "docs/design.md"
SCANNED = ("wxgate", "tests", "bench", "deploy", "docs", "README.md")
THIS_FILE = Path(__file__).resolve()

# §5.3, §2.1–2.2, §5.2-§5.5, §9 item 4, §9 items 1-3
_SECTION_REF = re.compile(
    r"§(\d+(?:\.\d+)*)(?:\s*[-–]\s*§?(\d+(?:\.\d+)*))?(?:\s+items?\s+(\d+)(?:\s*[-–]\s*(\d+))?)?"
)
_PROTOCOL_HEADING = re.compile(r"^#{2,3} §(\d+(?:\.\d+)*)\s", re.MULTILINE)
_DESIGN_CITATION = re.compile(re.escape(DESIGN_DOC) + r'(?:, "([^"\n]+)")?')
_HEADING = re.compile(r"^#{2,3} (.+?)\s*$", re.MULTILINE)
_CHECKLIST_SECTION = "9"
_CHECKLIST_ITEM = re.compile(r"^(\d+)\. ", re.MULTILINE)
_STARTING_DOCUMENTS = re.compile(r"\bDESIGN\.md\b|\bwechat-api\.md\b")


def _texts() -> Iterator[tuple[str, str]]:
    """(path relative to the repository, text) of every text file that may cite."""
    for name in SCANNED:
        top = ROOT / name
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            if not path.is_file() or path == THIS_FILE or "__pycache__" in path.parts:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:  # images and other binary files
                continue
            yield str(path.relative_to(ROOT)), text


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _protocol_sections() -> set[str]:
    return set(_PROTOCOL_HEADING.findall((ROOT / PROTOCOL_DOC).read_text(encoding="utf-8")))


def _checklist_items() -> set[int]:
    text = (ROOT / PROTOCOL_DOC).read_text(encoding="utf-8")
    start = re.search(rf"^## §{_CHECKLIST_SECTION}\s", text, re.MULTILINE)
    assert start is not None, f"{PROTOCOL_DOC} has no §{_CHECKLIST_SECTION}"
    following = re.search(r"^## ", text[start.end() :], re.MULTILINE)
    body = text[start.end() : start.end() + following.start() if following else len(text)]
    return {int(number) for number in _CHECKLIST_ITEM.findall(body)}


def _protocol_references() -> Iterator[tuple[str, re.Match[str]]]:
    """Every `§` reference in a file that cites the protocol document ("where", match)."""
    for where, text in _texts():
        if PROTOCOL_DOC not in text and where != PROTOCOL_DOC:
            continue
        for match in _SECTION_REF.finditer(text):
            yield f"{where}:{_line_of(text, match.start())}", match


def _span(first: str, last: str | None) -> list[str]:
    """The sections a reference names: `5.2-5.5` is 5.2, 5.3, 5.4 and 5.5."""
    if last is None:
        return [first]
    head, _, start = first.rpartition(".")
    last_head, _, end = last.rpartition(".")
    if head != last_head or int(end) < int(start):
        return [first, last]
    prefix = f"{head}." if head else ""
    return [f"{prefix}{number}" for number in range(int(start), int(end) + 1)]


def test_every_cited_protocol_section_is_a_heading_of_the_protocol_document() -> None:
    sections = _protocol_sections()
    cited = [
        (where, number)
        for where, match in _protocol_references()
        for number in _span(*match.group(1, 2))
    ]
    assert cited, f"no citation of {PROTOCOL_DOC} found: the scan is broken"
    missing = [f"{where}: §{number}" for where, number in cited if number not in sections]
    assert not missing, f"sections cited but not headings of {PROTOCOL_DOC}: {missing}"


def test_every_cited_checklist_item_is_in_the_checklist() -> None:
    items = _checklist_items()
    cited = []
    for where, match in _protocol_references():
        first, last = match.group(3, 4)
        if first is not None:
            assert match.group(1) == _CHECKLIST_SECTION, f"{where}: items outside the checklist"
            numbers = range(int(first), int(last or first) + 1)
            cited += [(where, number) for number in numbers]
    assert cited, f"no citation of a §{_CHECKLIST_SECTION} item found: the scan is broken"
    missing = [f"{where}: item {number}" for where, number in cited if number not in items]
    assert not missing, f"checklist items cited but not in §{_CHECKLIST_SECTION}: {missing}"


def test_every_cited_design_section_is_a_heading_of_the_design_document() -> None:
    headings = set(_HEADING.findall((ROOT / DESIGN_DOC).read_text(encoding="utf-8")))
    cited = [
        (f"{where}:{_line_of(text, match.start())}", match.group(1))
        for where, text in _texts()
        for match in _DESIGN_CITATION.finditer(text)
        if match.group(1) is not None
    ]
    assert cited, f"no citation of a section of {DESIGN_DOC} found: the scan is broken"
    missing = [f"{where}: {name!r}" for where, name in cited if name not in headings]
    assert not missing, f"sections cited but not headings of {DESIGN_DOC}: {missing}"


def test_nothing_cites_the_starting_documents_by_their_old_names() -> None:
    stale = [
        f"{where}:{_line_of(text, match.start())}: {match.group()}"
        for where, text in _texts()
        for match in _STARTING_DOCUMENTS.finditer(text)
    ]
    assert not stale, f"cite {DESIGN_DOC} and {PROTOCOL_DOC} instead: {stale}"
