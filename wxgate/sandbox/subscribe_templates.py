"""Subscribe templates (docs/wechat-protocol.md §4.1, "Template management"): the public
library's queries, and the templates one account added.

`getcategory`, `getpubtemplatetitles` (`ids` required: 200018 without it, 200019 when
not numbers; `start` 200016, `limit` 1-30 200017), `getpubtemplatekeywords` (each
keyword with its `rule`; 200014 for an unknown `tid`), `addtemplate` (`tid`, 2-5
distinct `kidList` entries 200020, `sceneDesc` up to 15 characters 200021, at most 50
templates 200012; JSON or form-encoded, since the mini-program doc asks for a form),
`gettemplate` and `deltemplate`. The codes are those of the mini-program
newtmpl pages. Errors are raised as `Answer`s.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from wxgate.sandbox.answers import Answer
from wxgate.sandbox.library import (
    CATEGORIES,
    LONG_TERM,
    SUBSCRIBE_LIBRARY,
    Keyword,
    PublicTemplate,
    content,
    example,
)

TEMPLATE_LIMIT = 200012
TID_INVALID = 200014
START_INVALID = 200016
LIMIT_INVALID = 200017
IDS_MISSING = 200018
IDS_INVALID = 200019
KID_LIST_INVALID = 200020
SCENE_DESC_INVALID = 200021
INVALID_TEMPLATE_ID = 40037
DATA_FORMAT_ERROR = 47001

MAX_TEMPLATES = 50
MAX_TITLES = 30
KID_LIST_SIZES = range(2, 6)
MAX_SCENE_DESC_CHARS = 15


@dataclass(frozen=True, slots=True)
class SubscribeTemplate:
    """One template an account added: a public template with the keywords it picked."""

    template_id: str
    public: PublicTemplate
    keywords: tuple[Keyword, ...]

    @property
    def long_term(self) -> bool:
        return self.public.type == LONG_TERM

    def to_json(self) -> dict[str, Any]:
        """One entry of gettemplate's `data`."""
        entry: dict[str, Any] = {
            "priTmplId": self.template_id,
            "title": self.public.title,
            "content": content(self.keywords),
            "example": example(self.keywords),
            "type": self.public.type,
        }
        enums = [
            {"keywordCode": f"{k.key}.DATA", "enumValueList": list(k.enum_values)}
            for k in self.keywords
            if k.enum_values
        ]
        if enums:
            entry["keywordEnumValueList"] = enums
        return entry


@dataclass(slots=True)
class SubscribeTemplates:
    """The subscribe templates of one account, by id."""

    templates: dict[str, SubscribeTemplate] = field(default_factory=dict)

    def get(self, template_id: str) -> SubscribeTemplate | None:
        return self.templates.get(template_id)

    def add(self, body: bytes) -> str:
        request = _request_fields(body)
        public = SUBSCRIBE_LIBRARY.get(str(request.get("tid", "")))
        if public is None:
            raise Answer(TID_INVALID)
        keywords = _chosen(public, request.get("kidList"))
        scene = request.get("sceneDesc", "")
        if not isinstance(scene, str) or len(scene) > MAX_SCENE_DESC_CHARS:
            raise Answer(SCENE_DESC_INVALID)
        if len(self.templates) >= MAX_TEMPLATES:
            raise Answer(TEMPLATE_LIMIT)
        template_id = secrets.token_urlsafe(32)
        self.templates[template_id] = SubscribeTemplate(template_id, public, keywords)
        return template_id

    def delete(self, body: bytes) -> None:
        template_id = _request_fields(body).get("priTmplId")
        if not isinstance(template_id, str) or self.templates.pop(template_id, None) is None:
            raise Answer(INVALID_TEMPLATE_ID)

    def listing(self) -> list[dict[str, Any]]:
        return [template.to_json() for template in self.templates.values()]


def categories() -> list[dict[str, Any]]:
    return [{"id": cid, "name": name} for cid, name in CATEGORIES.items()]


def titles(params: Mapping[str, str]) -> dict[str, Any]:
    """getpubtemplatetitles: the library's titles in the categories `ids`, one page."""
    raw_ids = params.get("ids")
    if not raw_ids:
        raise Answer(IDS_MISSING)
    parts = raw_ids.split(",")
    if not all(part.strip().isdigit() for part in parts):
        raise Answer(IDS_INVALID)
    wanted = {int(part) for part in parts}
    start = _page_number(params.get("start"), 0, range(0, 2**31), START_INVALID)
    limit = _page_number(params.get("limit"), MAX_TITLES, range(1, MAX_TITLES + 1), LIMIT_INVALID)
    found = [t for t in SUBSCRIBE_LIBRARY.values() if t.category_id in wanted]
    page = found[start : start + limit]
    return {
        "count": len(found),
        "data": [
            {"tid": int(t.tid), "title": t.title, "type": t.type, "categoryId": str(t.category_id)}
            for t in page
        ],
    }


def keywords(params: Mapping[str, str]) -> dict[str, Any]:
    """getpubtemplatekeywords: the keywords of one library template, each with its rule."""
    public = SUBSCRIBE_LIBRARY.get(params.get("tid", ""))
    if public is None:
        raise Answer(TID_INVALID)
    return {
        "count": len(public.keywords),
        "data": [
            {"kid": k.kid, "name": k.name, "example": k.example, "rule": k.rule}
            for k in public.keywords
        ],
    }


def _page_number(raw: str | None, default: int, allowed: range, errcode: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) not in allowed:
        raise Answer(errcode)
    return int(raw)


def _chosen(public: PublicTemplate, kid_list: Any) -> tuple[Keyword, ...]:
    if not isinstance(kid_list, list) or len(kid_list) not in KID_LIST_SIZES:
        raise Answer(KID_LIST_INVALID)
    chosen: list[Keyword] = []
    for kid in kid_list:
        keyword = public.keyword(kid) if type(kid) is int else None
        if keyword is None or keyword in chosen:
            raise Answer(KID_LIST_INVALID)
        chosen.append(keyword)
    return tuple(chosen)


def _request_fields(body: bytes) -> dict[str, Any]:
    """A JSON object, or a form whose `kidList` is repeated or one list (`[1,2]`, `1,2`)."""
    if body.lstrip().startswith(b"{"):
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Answer(DATA_FORMAT_ERROR) from None
        if type(value) is not dict:
            raise Answer(DATA_FORMAT_ERROR)
        return value
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    fields: dict[str, Any] = {k: v for k, v in pairs if k != "kidList"}
    kids = [v for k, v in pairs if k == "kidList"]
    if kids:
        fields["kidList"] = _form_kids(kids)
    return fields


def _form_kids(values: list[str]) -> list[Any]:
    if len(values) == 1:
        values = values[0].strip("[] ").split(",")
    return [int(v) if v.strip().isdigit() else v for v in values]
