"""The subscribe template library (`/wxaapi/newtmpl/*`): what its answers hold.

Subscribe notifications and mini-program subscribe messages take their templates from
WeChat's public library: categories, titles (`tid`) and keywords (`kid`, each with
the `rule` that names its type), combined into a private template (`priTmplId`)
(docs/wechat-protocol.md §4.1; protocol review part (c)). This module owns the
records of those answers and reading them leniently from WeChat's JSON; client.py
makes the calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wxgate.wechat.template_content import TemplateKey, subscribe_template_keys

CATEGORY_PATH = "/wxaapi/newtmpl/getcategory"
PUB_TITLES_PATH = "/wxaapi/newtmpl/getpubtemplatetitles"
PUB_KEYWORDS_PATH = "/wxaapi/newtmpl/getpubtemplatekeywords"
ADD_PATH = "/wxaapi/newtmpl/addtemplate"
LIST_PATH = "/wxaapi/newtmpl/gettemplate"
DELETE_PATH = "/wxaapi/newtmpl/deltemplate"

MAX_TITLES_PER_PAGE = 30  # getpubtemplatetitles' limit (200017 above it)
MAX_KEYWORDS = 5  # addtemplate's kidList: 2 to 5 keywords
MIN_KEYWORDS = 2
MAX_SCENE_DESC_CHARS = 15  # sceneDesc (200021 above it)
# A new one-time template (10000001 <= tid < 20000000) takes an empty kidList
# (subscribeMessage.addTemplate doc).
ONE_TIME_TIDS = range(10_000_001, 20_000_000)
ONE_TIME, LONG_TERM = 2, 3  # a private template's `type`


@dataclass(frozen=True, slots=True)
class Category:
    """A service category of the account (getcategory)."""

    id: int
    name: str


@dataclass(frozen=True, slots=True)
class PubTemplateTitle:
    """A library template of one of the account's categories (getpubtemplatetitles)."""

    tid: int
    title: str
    type: int  # 2 one-time, 3 long-term
    category_id: int


@dataclass(frozen=True, slots=True)
class PubTemplateTitles:
    """One page of library titles, and how many there are in all."""

    count: int
    titles: list[PubTemplateTitle]


@dataclass(frozen=True, slots=True)
class PubTemplateKeyword:
    """A keyword a library template offers (getpubtemplatekeywords); `rule` is its type
    (`thing`, `time`, ...), the prefix its key will carry."""

    kid: int
    name: str
    example: str
    rule: str


@dataclass(frozen=True, slots=True)
class SubscribeTemplate:
    """A private template of the account (gettemplate), with the keys its content names."""

    template_id: str  # priTmplId
    title: str
    content: str
    example: str
    type: int  # 2 one-time, 3 long-term
    keys: tuple[TemplateKey, ...]

    @property
    def one_time(self) -> bool:
        return self.type == ONE_TIME


def kid_list_problem(tid: int, kid_list: list[int]) -> str | None:
    """What WeChat would answer 200020 for, before the call is made."""
    if int(tid) in ONE_TIME_TIDS:
        return None if not kid_list else "a new one-time template takes an empty kidList"
    if not MIN_KEYWORDS <= len(kid_list) <= MAX_KEYWORDS:
        return f"kidList takes {MIN_KEYWORDS} to {MAX_KEYWORDS} keywords (got {len(kid_list)})"
    return None


def categories(answer: Mapping[str, Any]) -> list[Category]:
    return [Category(_int(item, "id"), _str(item, "name")) for item in _items(answer)]


def pub_titles(answer: Mapping[str, Any]) -> PubTemplateTitles:
    titles = [
        PubTemplateTitle(
            tid=_int(item, "tid"),
            title=_str(item, "title"),
            type=_int(item, "type"),
            category_id=_int(item, "categoryId"),
        )
        for item in _items(answer)
    ]
    count = answer.get("count")
    return PubTemplateTitles(count if isinstance(count, int) else len(titles), titles)


def pub_keywords(answer: Mapping[str, Any]) -> list[PubTemplateKeyword]:
    return [
        PubTemplateKeyword(
            kid=_int(item, "kid"),
            name=_str(item, "name"),
            example=_str(item, "example"),
            rule=_str(item, "rule"),
        )
        for item in _items(answer)
    ]


def templates(answer: Mapping[str, Any]) -> list[SubscribeTemplate]:
    return [
        SubscribeTemplate(
            template_id=_str(item, "priTmplId"),
            title=_str(item, "title"),
            content=_str(item, "content"),
            example=_str(item, "example"),
            type=_int(item, "type"),
            keys=tuple(
                subscribe_template_keys(_str(item, "content"), item.get("keywordEnumValueList"))
            ),
        )
        for item in _items(answer)
    ]


def _items(answer: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    data = answer.get("data")
    return [item for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []


def _str(item: Mapping[str, Any], name: str) -> str:
    value = item.get(name)
    return value if isinstance(value, str) else "" if value is None else str(value)


def _int(item: Mapping[str, Any], name: str) -> int:
    value = item.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else 0
