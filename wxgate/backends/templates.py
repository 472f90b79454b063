"""The template registry's storage: each app's templates as WeChat last listed them.

A sync (delivery/template_sync.py) replaces the templates of one (app, kind) at once
and records how it went; intake reads them to check a message's template_id and data
keys. Both engines keep one copy every process shares (sqlite_templates.py,
redis_templates.py), behind `TemplateStore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.template_content import TemplateKey


@dataclass(frozen=True, slots=True)
class RegisteredTemplate:
    """One template of an app: its id, the kind of message it serves, and its keys."""

    template_id: str
    kind: MessageKind
    title: str
    content: str
    keys: tuple[TemplateKey, ...]

    def to_json(self) -> bytes:
        """How both engines store it (keys as [name, type, enum values or null])."""
        return orjson.dumps(
            {
                "template_id": self.template_id,
                "kind": self.kind.value,
                "title": self.title,
                "content": self.content,
                "keys": [
                    [key.name, key.type, None if key.enum_values is None else list(key.enum_values)]
                    for key in self.keys
                ],
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> RegisteredTemplate:
        item: dict[str, Any] = orjson.loads(raw)
        return cls(
            template_id=item["template_id"],
            kind=MessageKind(item["kind"]),
            title=item["title"],
            content=item["content"],
            keys=tuple(
                TemplateKey(name, type_, None if values is None else tuple(values))
                for name, type_, values in item["keys"]
            ),
        )


@dataclass(frozen=True, slots=True)
class TemplateSyncState:
    """How the last sync of one (app, kind) went: `ok_at` is the last one that
    succeeded (None: never), `error` is empty when the last attempt succeeded."""

    kind: MessageKind
    attempt_at: float
    ok_at: float | None = None
    error: str = ""
    count: int = 0  # templates the last successful sync stored

    @property
    def last_ok(self) -> bool:
        return not self.error and self.ok_at is not None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "kind": self.kind.value,
                "attempt_at": self.attempt_at,
                "ok_at": self.ok_at,
                "error": self.error,
                "count": self.count,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> TemplateSyncState:
        item: dict[str, Any] = orjson.loads(raw)
        return cls(
            MessageKind(item["kind"]),
            item["attempt_at"],
            item["ok_at"],
            item["error"],
            item["count"],
        )


class TemplateStore(Protocol):
    """Each app's registered templates, shared by every process of an engine."""

    async def replace(
        self, app: str, kind: MessageKind, templates: Sequence[RegisteredTemplate], now: float
    ) -> None:
        """The templates of (app, kind) become exactly `templates`, and the sync is
        recorded as succeeded at `now`: one atomic change."""
        ...

    async def sync_failed(self, app: str, kind: MessageKind, error: str, now: float) -> None:
        """Record a failed sync of (app, kind); the templates stored stay as they are."""
        ...

    async def templates(self, app: str) -> list[RegisteredTemplate]:
        """Every template of `app`, of every kind, ordered by template_id."""
        ...

    async def sync_states(self, app: str) -> dict[MessageKind, TemplateSyncState]:
        """The last sync of each kind of `app` that was ever synced."""
        ...
