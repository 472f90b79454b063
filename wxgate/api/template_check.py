"""The template registry's intake check: a message must fit a template its app has.

With the registry of the app (as the worker processes' sync stored it) a message is
refused, each problem named at its field: a template_id the app does not have (only
while the last sync of that kind succeeded, is recent and listed some: a failed or
stale sync says nothing about templates added since), a data key the template has and the
message lacks, or one the message has and the template does not, and an enum value
the template does not list. The typed rules of each key (thing, amount, ...) were
applied by parse already: a key's name is its type, and the template names the same
key. `[apps.NAME] template_check`: "off", "warn" (logged, sent anyway) or "enforce";
unset, it enforces once a sync has succeeded and warns before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wxgate.api.errors import InvalidRequest
from wxgate.api.intake_checks import message_loc
from wxgate.backends.base import Backend, NewMessage
from wxgate.backends.templates import RegisteredTemplate, TemplateSyncState
from wxgate.clock import Clock
from wxgate.config import Settings
from wxgate.observability import get_logger
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.template_content import data_key_problems
from wxgate.wechat.value_rules import enum_problem

# How long a process answers from its copy of an app's registry before reading it
# again: a sync is seen by intake within this. One read per app per second keeps the
# check off storage at any request rate.
REGISTRY_CACHE_S = 1.0
# A successful sync older than this many sync intervals no longer proves that an
# unknown template_id is unknown.
STALE_AFTER_INTERVALS = 2.0
MAX_PROBLEMS = 100

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AppRegistry:
    """One app's templates and sync states, as read at `read_at`."""

    templates: Mapping[str, RegisteredTemplate]
    states: Mapping[MessageKind, TemplateSyncState]
    read_at: float

    @property
    def ever_synced(self) -> bool:
        return any(state.ok_at is not None for state in self.states.values())

    def proves_absence(self, kind: MessageKind, now: float, interval_s: float) -> bool:
        """The last sync of `kind` succeeded recently and listed templates: one it lacks
        is not the app's. An empty list proves nothing: an account without templates of
        a kind sends none of it, so the app's messages of that kind name templates kept
        elsewhere (another account's, a sandbox's), and WeChat is left to judge them."""
        state = self.states.get(kind)
        if state is None or not state.last_ok or state.ok_at is None or state.count == 0:
            return False
        return now - state.ok_at <= STALE_AFTER_INTERVALS * interval_s


@dataclass
class _Cached:
    registry: AppRegistry | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class TemplateCheck:
    """The IntakeCheck of the template registry (see the module docstring)."""

    def __init__(self, settings: Settings, backend: Backend, clock: Clock) -> None:
        self._settings = settings
        self._backend = backend  # its store is taken when first used: building an app touches none
        self._clock = clock
        self._cache: dict[str, _Cached] = {}

    async def registry(self, app: str) -> AppRegistry:
        """The app's registry, read from storage at most every REGISTRY_CACHE_S."""
        cached = self._cache.setdefault(app, _Cached())
        now = self._clock.now()
        if cached.registry is not None and now - cached.registry.read_at < REGISTRY_CACHE_S:
            return cached.registry
        async with cached.lock:  # one read per app at a time; the others take its answer
            if cached.registry is None or now - cached.registry.read_at >= REGISTRY_CACHE_S:
                store = self._backend.template_store()
                templates = await store.templates(app)
                states = await store.sync_states(app)
                by_id = {template.template_id: template for template in templates}
                cached.registry = AppRegistry(by_id, states, self._clock.now())
            return cached.registry

    async def check(self, app: str, messages: Sequence[NewMessage]) -> Sequence[NewMessage]:
        settings = self._settings.apps[app]
        if settings.template_check == "off" or not messages:
            return messages
        registry = await self.registry(app)
        if not registry.templates and not registry.states:
            return messages  # never synced: nothing to check against
        problems = self._problems(registry, messages, settings.template_sync_s)
        if not problems:
            return messages
        mode = settings.template_check or ("enforce" if registry.ever_synced else "warn")
        if mode == "enforce":
            raise InvalidRequest(problems[:MAX_PROBLEMS])
        _log.warning(
            "template check: sent anyway (template_check = warn)",
            app=app,
            problems=[problem["msg"] for problem in problems[:10]],
        )
        return messages

    def _problems(
        self, registry: AppRegistry, messages: Sequence[NewMessage], interval_s: float
    ) -> list[dict[str, Any]]:
        now = self._clock.now()
        problems: list[dict[str, Any]] = []
        seen: set[str] = set()  # a batch's shared fault is named once, at its first recipient
        for message in messages:
            for fields, msg in _message_problems(registry, message, now, interval_s):
                if msg not in seen:
                    seen.add(msg)
                    problems.append({"loc": message_loc(message, *fields), "msg": msg})
            if len(problems) >= MAX_PROBLEMS:
                break
        return problems


def _message_problems(
    registry: AppRegistry, message: NewMessage, now: float, interval_s: float
) -> list[tuple[tuple[str, ...], str]]:
    template_id = message.template_id
    template = registry.templates.get(template_id)
    if template is None:
        if not registry.proves_absence(message.kind, now, interval_s):
            return []
        return [
            (
                ("template_id",),
                f"template_id: {template_id!r} is not a {message.kind.value} template of this "
                "app (as of its last template sync; `wxgate templates sync` after adding one)",
            )
        ]
    if template.kind is not message.kind:
        return [
            (
                ("template_id",),
                f"template_id: {template_id!r} is a {template.kind.value} template, "
                f"not one for a {message.kind.value} message",
            )
        ]
    data = message.payload.get("data")
    given: Mapping[str, Any] = data if isinstance(data, dict) else {}
    found = [
        (tuple(str(part) for part in problem.loc), problem.msg)
        for problem in data_key_problems(given.keys(), template.keys, message.kind)
    ]
    for key in template.keys:
        item = given.get(key.name)
        value = item.get("value") if isinstance(item, dict) else None
        if key.enum_values is not None and isinstance(value, str) and value:
            problem = enum_problem(value, key.enum_values)
            if problem is not None:
                found.append((("data", key.name, "value"), f"{key.name}: {problem}"))
    return found
