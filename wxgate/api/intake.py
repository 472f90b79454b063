"""Intake: from a request that passed its shape check to messages stored, and the answer.

`accept` is the one sequence every intake route runs (POST /v1/messages, its fast
path, and the batch route): backpressure, the app, the messages of the request,
the gateway's intake checks (intake_checks.py), one durable `enqueue`, the metrics,
the answer (202, or 200 when every message was
stored before under its idempotency key). What differs between a single message
and a batch is an `Intake`: `SingleIntake` and `BatchIntake` below.

WeChat's rules are applied here with `wxgate.wechat.template.parse`, so a message
WeChat would refuse for its content never enters the queue; its problems come
back with locations inside the request (`["body", "recipients", 3, "touser"]`).
Also owned here: which app a request means, which idempotency key it carries, and
the batch id (derived from (app, key) when a batch has a key, so a retried batch
gets the same batch_id and, through its members' positions, the same ids). What
identifies a request for its key is idempotency.py's.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.responses import Response

from wxgate.api.auth import require_app
from wxgate.api.errors import InvalidRequest
from wxgate.api.idempotency import (
    batch_digest,
    idempotency_key,
    refused,
    repeated_keys,
    request_digest,
)
from wxgate.api.message_kinds import RECIPIENT_OVERRIDES, KindRules, WireMessage, rules_for
from wxgate.api.scheduling import scheduled
from wxgate.api.schemas import (
    BatchIn,
    MessageIn,
    RecipientIn,
    ok,
)
from wxgate.api.state import ApiState
from wxgate.backends.base import Enqueued, IdempotencyConflict, NewBatch, NewMessage
from wxgate.config import Settings
from wxgate.observability import child
from wxgate.wechat.template import Problem, TemplateValidationError

# Fields of a request that are the gateway's, not part of WeChat's send body.
_GATEWAY_FIELDS = frozenset(("app", "idempotency_key", "recipients", "kind"))
_GATEWAY_FIELDS |= {"callback_url"}  # webhook_intake.py's
_GATEWAY_FIELDS |= {"send_at", "priority"}  # scheduling.py's
# A batch with thousands of bad recipients answers the first ones, not a megabyte of errors.
MAX_REPORTED_PROBLEMS = 100


def resolve_app(settings: Settings, name: str | None) -> str:
    """The configured app a request names (or the only one when it names none)."""
    if name is not None and name not in settings.apps:
        raise InvalidRequest.at(["body", "app"], f"unknown app {name!r}")
    try:
        return settings.app(name)[0]
    except KeyError as exc:
        raise InvalidRequest.at(["body", "app"], str(exc.args[0])) from None


def _problems_json(
    problems: Sequence[Problem], prefix: Sequence[str | int]
) -> list[dict[str, Any]]:
    return [{"loc": [*prefix, *problem.loc], "msg": problem.msg} for problem in problems]


def _template_body(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in raw.items() if key not in _GATEWAY_FIELDS}


def one_message(
    raw: Mapping[str, Any],
    app: str,
    key: str | None,
    trace_id: str | None,
    rules: KindRules,
) -> tuple[NewMessage, list[dict[str, Any]]]:
    """The message of a POST /v1/messages body (already shape-checked) and its warnings."""
    try:
        message, warnings = rules.parse(_template_body(raw))
    except TemplateValidationError as exc:
        raise InvalidRequest(_problems_json(exc.problems, ["body"])) from None
    payload = message.to_wechat()
    new = NewMessage(
        app=app,
        payload=payload,
        idempotency_key=key,
        trace_id=trace_id,
        digest=request_digest(app, payload, rules.kind),
        kind=rules.kind,
        callback_url=raw.get("callback_url"),
    )
    return new, _problems_json(warnings, ["body"])


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    messages: list[NewMessage]
    warnings: list[dict[str, Any]]
    keyed: NewBatch | None  # a batch sent with an idempotency key


def batch_id_for(app: str, key: str | None) -> str:
    """A fresh id, or, for a batch with an idempotency key, the same id every time."""
    if key is None:
        return uuid.uuid4().hex
    return hashlib.sha256(f"{app}\x00{key}".encode()).hexdigest()[:32]


# template.py has no public check of one field, so a recipient's openid is checked by
# parsing it inside a minimal message whose other fields are known to pass (the kind's
# `probe_data`): the same rule as everywhere, at a third of the cost of parsing the
# whole message again.


class _BatchReader:
    """Validates a batch recipient by recipient, collecting every problem.

    Measured (1,000 recipients, 4 data keys): parsing every recipient's whole message
    cost 24 ms a batch; parsing the shared part once and only the openid of a bare
    recipient costs a fraction of that. Recipients with their own data, url or
    miniprogram get their merged message parsed in full.
    """

    def __init__(self, raw: Mapping[str, Any], body: BatchIn, rules: KindRules) -> None:
        self.rules = rules
        self.shared = _template_body(raw)
        self.raw_recipients: list[Any] = raw["recipients"]
        self.problems: list[dict[str, Any]] = []
        self.warnings: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._shared_payload: dict[str, Any] | None = None
        self._shared_checked = False

    def payload(self, index: int, recipient: RecipientIn) -> dict[str, Any] | None:
        """The template/send body for recipient `index`, or None when it has problems."""
        own = self.raw_recipients[index]
        if isinstance(own, str) or not _overrides(own):
            return self._bare(index, recipient.touser)
        prefix: list[str | int] = ["body", "recipients", index]
        message = self._parsed(self._merged(recipient.touser, own), index, prefix)
        return None if message is None else message.to_wechat()

    def _bare(self, index: int, touser: str) -> dict[str, Any] | None:
        if not self._shared_checked:  # the first bare recipient checks the shared part
            self._shared_checked = True
            shared = self._parsed({**self.shared, "touser": touser}, index, ["body"])
            if shared is None:
                return None
            self._shared_payload = shared.to_wechat()
        elif not self._openid_ok(index, touser) or self._shared_payload is None:
            return None
        payload = dict(self._shared_payload)
        payload["touser"] = touser
        return payload

    def _openid_ok(self, index: int, touser: str) -> bool:
        probe = {"touser": touser, "template_id": "probe", "data": self.rules.probe_data}
        return self._parsed(probe, index, ["body"]) is not None

    def _parsed(
        self, body: dict[str, Any], index: int, prefix: list[str | int]
    ) -> WireMessage | None:
        try:
            message, warnings = self.rules.parse(body)
        except TemplateValidationError as exc:
            self._refuse(exc.problems, index, prefix)
            return None
        for warning in warnings:  # the shared fields warn once, not once per recipient
            self.warnings.setdefault((warning.loc, warning.msg), _warning_json(warning))
        return message

    def _refuse(self, problems: list[Problem], index: int, prefix: list[str | int]) -> None:
        if len(self.problems) >= MAX_REPORTED_PROBLEMS:
            return
        for problem in problems:
            # An openid problem belongs to its recipient even when found in the shared parse.
            where = ["body", "recipients", index] if problem.loc == ("touser",) else prefix
            self.problems.append({"loc": [*where, *problem.loc], "msg": problem.msg})

    def _merged(self, touser: str, own: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(self.shared)
        merged["touser"] = touser
        if own.get("data") is not None:
            merged["data"] = {**merged.get("data", {}), **own["data"]}
        for field in RECIPIENT_OVERRIDES[1:]:
            if own.get(field) is not None:
                merged[field] = own[field]
        return merged


def _overrides(own: Mapping[str, Any]) -> bool:
    return any(own.get(field) is not None for field in RECIPIENT_OVERRIDES)


def _warning_json(warning: Problem) -> dict[str, Any]:
    return {"loc": ["body", *warning.loc], "msg": warning.msg}


def batch_messages(
    raw: Mapping[str, Any], body: BatchIn, app: str, trace_id: str | None, rules: KindRules
) -> Batch:
    """Every message of a POST /v1/messages/batch body, or InvalidRequest naming each bad
    recipient: all or nothing."""
    reader = _BatchReader(raw, body, rules)
    reader.problems += repeated_keys([recipient.idempotency_key for recipient in body.recipients])
    batch_id = batch_id_for(app, body.idempotency_key)
    messages: list[NewMessage] = []
    for index, recipient in enumerate(body.recipients):
        payload = reader.payload(index, recipient)
        if payload is None or reader.problems:
            continue  # keep validating: the answer names every bad recipient
        messages.append(
            NewMessage(
                app=app,
                payload=payload,
                idempotency_key=recipient.idempotency_key,
                trace_id=trace_id,
                batch_id=batch_id,
                digest=request_digest(app, payload, rules.kind),
                batch_position=index,
                kind=rules.kind,
                callback_url=body.callback_url,
            )
        )
    if reader.problems:
        raise InvalidRequest(reader.problems[:MAX_REPORTED_PROBLEMS])
    keyed = None
    if body.idempotency_key is not None:
        keyed = NewBatch(batch_id, app, body.idempotency_key, batch_digest(messages))
    return Batch(batch_id, messages, list(reader.warnings.values()), keyed)


# -- one sequence for every intake route ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Prepared:
    """The messages of one request, and its warnings, ready for `enqueue`."""

    messages: list[NewMessage]
    warnings: list[dict[str, Any]]
    batch_id: str | None = None
    batch: NewBatch | None = None  # a keyed batch, checked whole against a repeat


class Intake(Protocol):
    """What one kind of intake request contributes to `accept`."""

    route: str  # the intake metric's label
    app: str | None  # the app the request names (None: the only one)
    kind: str  # the kind of message it asks for (api/message_kinds.py)

    def prepare(self, app: str, trace_id: str | None, rules: KindRules) -> Prepared:
        """The request's messages, or InvalidRequest naming every problem."""
        ...

    def answer(self, prepared: Prepared, results: list[Enqueued]) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class SingleIntake:
    """POST /v1/messages: `raw` is the JSON body as `body` validated it."""

    body: MessageIn
    raw: Mapping[str, Any]
    header_key: str | None
    route: str = "messages"

    @property
    def app(self) -> str | None:
        return self.body.app

    @property
    def kind(self) -> str:
        return self.body.kind

    def prepare(self, app: str, trace_id: str | None, rules: KindRules) -> Prepared:
        key = idempotency_key(self.body.idempotency_key, self.header_key)
        message, warnings = one_message(self.raw, app, key, trace_id, rules)
        return Prepared(scheduled([message], self.body.send_at, self.body.priority), warnings)

    def answer(self, prepared: Prepared, results: list[Enqueued]) -> dict[str, Any]:
        [result] = results
        return {"id": result.id, "status": str(result.status), "warnings": prepared.warnings}


@dataclass(frozen=True, slots=True)
class BatchIntake:
    """POST /v1/messages/batch: one template to many recipients, all or nothing."""

    body: BatchIn
    raw: Mapping[str, Any]
    route: str = "batch"

    @property
    def app(self) -> str | None:
        return self.body.app

    @property
    def kind(self) -> str:
        return self.body.kind

    def prepare(self, app: str, trace_id: str | None, rules: KindRules) -> Prepared:
        batch = batch_messages(self.raw, self.body, app, trace_id, rules)
        messages = scheduled(batch.messages, self.body.send_at, self.body.priority)
        return Prepared(messages, batch.warnings, batch.batch_id, batch.keyed)

    def answer(self, prepared: Prepared, results: list[Enqueued]) -> dict[str, Any]:
        return {
            "batch_id": prepared.batch_id,
            "ids": [result.id for result in results],
            "warnings": prepared.warnings,
        }


async def accept(state: ApiState, intake: Intake, trace_id: str | None) -> Response:
    """Store what a request asks for, durably, before answering: 202 when anything new
    was stored, 200 when every message repeated a known idempotency key."""
    started = state.clock.monotonic()
    state.intake.mark()
    await state.backpressure.check()
    app = resolve_app(state.settings, intake.app)
    require_app(app)  # the key's apps (auth.py)
    rules = rules_for(intake.kind, app, state.settings.apps[app])
    prepared = intake.prepare(app, trace_id, rules)
    messages: Sequence[NewMessage] = prepared.messages
    for check in state.intake_checks:
        messages = await check.check(app, messages)
    enqueue = functools.partial(state.backend.enqueue, now=state.clock.now(), batch=prepared.batch)
    try:
        deduplicated = await state.dedupe.enqueue(app, messages, enqueue)  # dedupe.py
    except IdempotencyConflict as conflict:
        raise refused(conflict) from None
    results = deduplicated.results
    created = sum(1 for result in results if result.created)
    metrics = state.metrics
    if created:
        child(metrics.messages, app, "accepted").inc(created)
        if any(message.verdict is not None for message in messages):
            _count_verdicts(state, app, messages, results)
        child(metrics.messages_by_kind, app, rules.kind.value, "accepted").inc(created)
    elapsed = state.clock.monotonic() - started
    child(metrics.intake_seconds, intake.route).observe(elapsed)
    return ok(deduplicated.mark(intake.answer(prepared, results)), 202 if created else 200)


def _count_verdicts(
    state: ApiState, app: str, messages: Sequence[NewMessage], results: list[Enqueued]
) -> None:
    """Messages an intake check settled unsent (suppressed, ...), counted by status."""
    settled = Counter(
        message.status.value
        for message, result in zip(messages, results, strict=True)
        if result.created and message.verdict is not None
    )
    for status, count in settled.items():
        child(state.metrics.messages, app, status).inc(count)
