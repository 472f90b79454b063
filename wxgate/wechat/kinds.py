"""The kinds of WeChat account and of notification wxgate speaks.

An official account (公众号) sends template messages (模板消息) and subscribe
notifications (订阅通知, `bizsend`); a mini program sends subscribe messages
(`subscribe/send`). The two account kinds hold tokens of different namespaces, so a
token of one kind is refused by the other's send endpoint (45103 or 48001).
"""

from __future__ import annotations

from enum import StrEnum


class AccountKind(StrEnum):
    OFFICIAL_ACCOUNT = "official_account"
    MINIPROGRAM = "miniprogram"


class MessageKind(StrEnum):
    TEMPLATE = "template"  # an official account's template message: template/send
    SUBSCRIBE = "subscribe"  # an official account's subscribe notification: subscribe/bizsend
    MINIPROGRAM = "miniprogram"  # a mini program's subscribe message: subscribe/send

    @property
    def account(self) -> AccountKind:
        """The kind of account that can send this kind of message."""
        if self is MessageKind.MINIPROGRAM:
            return AccountKind.MINIPROGRAM
        return AccountKind.OFFICIAL_ACCOUNT
