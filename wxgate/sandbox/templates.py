"""Template management of one account (docs/wechat-protocol.md §3): its industry, the
templates it added, and the ids it deleted (a send with a deleted id is answered 40037).

A template is added from the library (`library.TEMPLATE_LIBRARY`) by short id with
the keywords it picks by name: `keyword_name_list` is required, and a missing or
empty list or an unknown name is 40246 (§3, from the api_addtemplate doc). An account
holds at most 25 templates; the 26th add is 45026 (§2.4,
Template_Message_Interface.html). Each template's `content` names its keys
(`订单号：{{character_string1.DATA}}`), so a registry can read their types. The bodies
are what the endpoints answer; errors are raised as `Answer`s.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wxgate.sandbox.answers import Answer
from wxgate.sandbox.library import TEMPLATE_LIBRARY, Keyword, PublicTemplate, content, example

DATA_FORMAT_ERROR = 47001
ARGUMENT_INVALID = 47003
INVALID_TEMPLATE_ID = 40037
CHANGED_TOO_OFTEN = 43100
KEYWORD_NAME_INVALID = 40246
TEMPLATE_LIMIT = 45026
INDUSTRY_CHANGE_INTERVAL_S = 30 * 86_400.0  # the industry may change once a month
MAX_TEMPLATES = 25
_COLON = "："  # the full-width colon of template-message contents

# WeChat's industry codes: id -> (first class, second class).
INDUSTRIES: dict[str, tuple[str, str]] = {
    str(i): pair
    for i, pair in enumerate(
        [
            ("IT科技", "互联网/电子商务"),
            ("IT科技", "IT软件与服务"),
            ("IT科技", "IT硬件与设备"),
            ("IT科技", "电子技术"),
            ("IT科技", "通信与运营商"),
            ("IT科技", "网络游戏"),
            ("金融业", "银行"),
            ("金融业", "基金理财信托"),
            ("金融业", "保险"),
            ("餐饮", "餐饮"),
            ("酒店旅游", "酒店"),
            ("酒店旅游", "旅游"),
            ("运输与仓储", "快递"),
            ("运输与仓储", "物流"),
            ("运输与仓储", "仓储"),
            ("教育", "培训"),
            ("教育", "院校"),
            ("政府与公共事业", "学术科研"),
            ("政府与公共事业", "交警"),
            ("政府与公共事业", "博物馆"),
            ("政府与公共事业", "公共事业非盈利机构"),
            ("医药护理", "医药医疗"),
            ("医药护理", "护理美容"),
            ("医药护理", "保健与卫生"),
            ("交通工具", "汽车相关"),
            ("交通工具", "摩托车相关"),
            ("交通工具", "火车相关"),
            ("交通工具", "飞机相关"),
            ("房地产", "建筑"),
            ("房地产", "物业"),
            ("消费品", "消费品"),
            ("商业服务", "法律"),
            ("商业服务", "会展"),
            ("商业服务", "中介服务"),
            ("商业服务", "认证"),
            ("商业服务", "审计"),
            ("文体娱乐", "传媒"),
            ("文体娱乐", "体育"),
            ("文体娱乐", "娱乐休闲"),
            ("印刷", "印刷"),
            ("其它", "其它"),
        ],
        start=1,
    )
}


def _industry_json(industry_id: str | None) -> dict[str, str]:
    first, second = INDUSTRIES.get(industry_id or "", ("", ""))
    return {"first_class": first, "second_class": second}


def _industry_id(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Answer(DATA_FORMAT_ERROR)
    if str(value) not in INDUSTRIES:
        raise Answer(ARGUMENT_INVALID, f" {key} invalid")
    return str(value)


@dataclass(slots=True)
class TemplateLibrary:
    """The template state of one account."""

    industry: tuple[str, str] | None = None
    industry_set_at: float = float("-inf")
    templates: dict[str, dict[str, str]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)

    def set_industry(self, body: Mapping[str, Any], now: float) -> None:
        industry = (_industry_id(body, "industry_id1"), _industry_id(body, "industry_id2"))
        if industry == self.industry:
            return
        if now - self.industry_set_at < INDUSTRY_CHANGE_INTERVAL_S:
            raise Answer(CHANGED_TOO_OFTEN)
        self.industry, self.industry_set_at = industry, now

    def get_industry(self) -> dict[str, Any]:
        primary, secondary = self.industry or (None, None)
        return {
            "primary_industry": _industry_json(primary),
            "secondary_industry": _industry_json(secondary),
        }

    def add(self, body: Mapping[str, Any]) -> str:
        short_id = body.get("template_id_short")
        if not isinstance(short_id, str) or not short_id:
            raise Answer(DATA_FORMAT_ERROR)
        public = TEMPLATE_LIBRARY.get(short_id)
        if public is None:
            raise Answer(INVALID_TEMPLATE_ID, " template_id_short invalid")
        keywords = _chosen_keywords(public, body.get("keyword_name_list"))
        if len(self.templates) >= MAX_TEMPLATES:
            raise Answer(TEMPLATE_LIMIT)
        template_id = secrets.token_urlsafe(32)
        primary, deputy = self.industry or (None, None)
        self.templates[template_id] = {
            "template_id": template_id,
            "title": public.title,
            "primary_industry": _industry_json(primary)["second_class"],
            "deputy_industry": _industry_json(deputy)["second_class"],
            "content": content(keywords, _COLON),
            "example": example(keywords, _COLON),
        }
        return template_id

    def all_templates(self) -> list[dict[str, str]]:
        return list(self.templates.values())

    def delete(self, body: Mapping[str, Any]) -> None:
        template_id = body.get("template_id")
        if not isinstance(template_id, str):
            raise Answer(DATA_FORMAT_ERROR)
        if self.templates.pop(template_id, None) is None:
            raise Answer(INVALID_TEMPLATE_ID)
        self.deleted.add(template_id)


def _chosen_keywords(public: PublicTemplate, names: Any) -> tuple[Keyword, ...]:
    """The library keywords `keyword_name_list` names, in its order; 40246 unless the list
    is a non-empty list of distinct names the template offers."""
    if not isinstance(names, list) or not names:
        raise Answer(KEYWORD_NAME_INVALID)
    chosen = []
    for name in names:
        keyword = public.keyword_named(name) if isinstance(name, str) else None
        if keyword is None or keyword in chosen:
            raise Answer(KEYWORD_NAME_INVALID)
        chosen.append(keyword)
    return tuple(chosen)
