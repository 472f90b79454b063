"""The keys a template's content names, and whether a message's data fits them.

A template's `content` (get_all_private_template for template messages, gettemplate
for subscribe templates) names each key as a `{{key.DATA}}` placeholder
(docs/wechat-protocol.md §2.1, §4.1); gettemplate adds the allowed values of enum keys
in `keywordEnumValueList`. This module reads both into `TemplateKey`s and checks a
message's data keys against them, for the template registry. It does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from wxgate.wechat.fields import Problem
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.value_rules import key_type

# `{{` and `}}` are reserved in template content, so a placeholder is unambiguous.
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_]*)\.DATA\s*\}\}")
_LEGACY_KEYWORD = re.compile(r"keyword[0-9]+")
# Shown by WeChat no more since 2023-05-04, so a message need not fill them (§2.3).
_OPTIONAL_IN_TEMPLATES = frozenset(("first", "remark"))


@dataclass(frozen=True, slots=True)
class TemplateKey:
    """One placeholder of a template: its key, the type whose rule its values follow
    (None for an untyped key: a legacy `keywordN`, `first`, `remark`) and, for an enum,
    the only values the template takes (None when not known)."""

    name: str
    type: str | None
    enum_values: tuple[str, ...] | None = None

    @property
    def legacy_keyword(self) -> bool:
        return _LEGACY_KEYWORD.fullmatch(self.name) is not None


def template_keys(content: str) -> list[TemplateKey]:
    """The keys of a template's content, in the order they first appear."""
    names = dict.fromkeys(match[1] for match in _PLACEHOLDER.finditer(content))
    return [TemplateKey(name, key_type(name)) for name in names]


def subscribe_template_keys(
    content: str, keyword_enum_value_list: object = None
) -> list[TemplateKey]:
    """The keys of a subscribe template (gettemplate's `content`), with the allowed values
    its `keywordEnumValueList` gives: `[{"keywordCode": "enum_string2.DATA",
    "enumValueList": ["客厅", ...]}]`. Entries of another shape are skipped."""
    allowed = _enum_values(keyword_enum_value_list)
    return [
        TemplateKey(key.name, key.type, allowed.get(key.name)) for key in template_keys(content)
    ]


def enum_values_of(keys: Iterable[TemplateKey]) -> dict[str, tuple[str, ...]]:
    """key -> allowed values, as `parse_subscribe(enum_values=...)` takes them."""
    return {key.name: key.enum_values for key in keys if key.enum_values is not None}


def data_key_problems(
    data_keys: Iterable[str], keys: Sequence[TemplateKey], kind: MessageKind
) -> list[Problem]:
    """What does not fit between a message's data and its template's keys: a key the
    template has and the message lacks (template messages may leave out first and
    remark), and a key the message has and the template does not. Each at ("data", key)."""
    known = {key.name for key in keys}
    given = list(dict.fromkeys(data_keys))
    problems = [
        Problem(("data", key.name), f"{key.name}: the template has this key; give it a value")
        for key in keys
        if key.name not in given
        and not (kind is MessageKind.TEMPLATE and key.name in _OPTIONAL_IN_TEMPLATES)
    ]
    listed = ", ".join(key.name for key in keys)
    problems += [
        Problem(("data", name), f"{name}: the template has no such key (its keys: {listed})")
        for name in given
        if name not in known
    ]
    return problems


def _enum_values(raw: object) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for entry in raw if isinstance(raw, list) else ():
        if not isinstance(entry, Mapping):
            continue
        code, values = entry.get("keywordCode"), entry.get("enumValueList")
        if isinstance(code, str) and isinstance(values, list):
            name = code.removesuffix(".DATA")
            found[name] = tuple(value for value in values if isinstance(value, str))
    return found
