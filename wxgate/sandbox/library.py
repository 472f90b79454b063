"""The public template libraries the sandbox offers, as WeChat's consoles do: template
messages by short id (`api_add_template`, docs/wechat-protocol.md §3) and subscribe
templates by `tid` in their categories (`wxaapi/newtmpl`, §4.1).

Each keyword has a library id (`kid`), a name, a rule (its type: `thing`, `time`,
`amount`, ...) and an example; an added template's placeholder for it is `{rule}{kid}`,
so `{{thing2.DATA}}` is keyword 2, a `thing`. An `enum_string` keyword takes only its
`enum_values` (gettemplate lists them as `keywordEnumValueList`, each under a
`keywordCode` such as `enum_string6.DATA`, as in WeChat's own examples).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ONE_TIME = 2  # a subscribe template's `type`: one send per accept
LONG_TERM = 3  # a subscribe template's `type`: sends while the user stays subscribed


@dataclass(frozen=True, slots=True)
class Keyword:
    """One keyword a public template offers."""

    kid: int
    name: str
    rule: str
    example: str
    enum_values: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The data key a send carries for it, `{{key.DATA}}` in the content."""
        return f"{self.rule}{self.kid}"


@dataclass(frozen=True, slots=True)
class PublicTemplate:
    """One template of a library; an account adds it with some of its keywords."""

    tid: str
    title: str
    category_id: int  # the subscribe library's categories; 0 in the template-message one
    keywords: tuple[Keyword, ...]
    type: int = ONE_TIME

    def keyword(self, kid: int) -> Keyword | None:
        return next((k for k in self.keywords if k.kid == kid), None)

    def keyword_named(self, name: str) -> Keyword | None:
        return next((k for k in self.keywords if k.name == name), None)


def content(keywords: tuple[Keyword, ...], colon: str = ":") -> str:
    """A template's content: one `name{colon}{{key.DATA}}` line per keyword."""
    return "".join(f"{k.name}{colon}{{{{{k.key}.DATA}}}}\n" for k in keywords)


def example(keywords: tuple[Keyword, ...], colon: str = ":") -> str:
    return "".join(f"{k.name}{colon}{k.example}\n" for k in keywords)


def _keywords(*rows: tuple[Any, ...]) -> tuple[Keyword, ...]:
    """Keywords numbered 1, 2, ... from (name, rule, example[, enum values]) rows."""
    return tuple(Keyword(kid, *row) for kid, row in enumerate(rows, start=1))


# Categories of the subscribe library (getcategory answers them, getpubtemplatetitles
# filters by them).
CATEGORIES: dict[int, str] = {616: "电商平台", 313: "物流服务", 426: "医疗服务"}

_ORDER_STATUSES = ("待发货", "已发货", "已签收")

SUBSCRIBE_LIBRARY: dict[str, PublicTemplate] = {
    template.tid: template
    for template in (
        PublicTemplate(
            "1001",
            "订单发货通知",
            616,
            _keywords(
                ("订单号", "character_string", "XN2024050100123"),
                ("商品名称", "thing", "无线蓝牙耳机"),
                ("发货时间", "time", "2024-05-01 15:01"),
                ("快递公司", "thing", "顺丰速运"),
                ("快递单号", "character_string", "SF1234567890"),
                ("订单状态", "enum_string", "已发货", _ORDER_STATUSES),
            ),
        ),
        PublicTemplate(
            "1002",
            "付款成功通知",
            616,
            _keywords(
                ("订单号", "character_string", "XN2024050100123"),
                ("支付金额", "amount", "¥128.00"),
                ("支付时间", "time", "2024-05-01 15:01"),
                ("商品名称", "thing", "无线蓝牙耳机"),
            ),
        ),
        PublicTemplate(
            "1003",
            "预约提醒",
            426,
            _keywords(
                ("预约项目", "thing", "口腔检查"),
                ("预约时间", "time", "2024-05-02 09:30"),
                ("就诊人", "name", "张三"),
                ("预约地点", "thing", "第一门诊楼三层"),
                ("联系电话", "phone_number", "0755-88886666"),
            ),
            type=LONG_TERM,
        ),
        PublicTemplate(
            "1004",
            "物流状态更新",
            313,
            _keywords(
                ("快递单号", "character_string", "SF1234567890"),
                ("物流状态", "phrase", "运输中"),
                ("更新时间", "time", "2024-05-01 18:20"),
            ),
        ),
    )
}

# The template-message library: category templates chosen by short id, with keywords
# picked by name (`keyword_name_list`).
TEMPLATE_LIBRARY: dict[str, PublicTemplate] = {
    template.tid: template
    for template in (
        PublicTemplate(
            "TM00015",
            "订单支付成功",
            0,
            _keywords(
                ("订单号", "character_string", "XN2024050100123"),
                ("金额", "amount", "¥128.00"),
                ("商品名称", "thing", "无线蓝牙耳机"),
                ("支付时间", "time", "2024-05-01 15:01"),
                ("发货时间", "time", "2024-05-01 18:20"),
            ),
        ),
        PublicTemplate(
            "TM00303",
            "订单发货提醒",
            0,
            _keywords(
                ("订单号", "character_string", "XN2024050100123"),
                ("快递公司", "thing", "顺丰速运"),
                ("快递单号", "character_string", "SF1234567890"),
                ("发货时间", "time", "2024-05-01 18:20"),
            ),
        ),
        PublicTemplate(
            "TM00785",
            "预约成功通知",
            0,
            _keywords(
                ("预约项目", "thing", "口腔检查"),
                ("预约时间", "time", "2024-05-02 09:30"),
                ("联系人", "name", "张三"),
                ("联系电话", "phone_number", "0755-88886666"),
            ),
        ),
    )
}
