"""The Redis engine: any number of gateway processes on any number of hosts, one Redis
(one redis-server, or a Redis Cluster: `cluster=True`, keys hash-tagged by
`redis_keys` so every script touches one slot; docs/design.md, "Redis Cluster").
On a cluster the queue may be `partitions` queues, one slot each: a message lives in
the partition of its id, leases take the partitions in turn, reads merge them, and
dedupe keys are claimed in slots of their own before their messages are stored.

Records are hashes; each app's ready messages are a Stream read by one consumer
group; retry times, leases, dead letters and settled records are sorted sets;
every change of a message's state is one Lua script (`redis_scripts`), which
writes the record, its queue entry, its counters and its indexes together.
Key shapes are in `redis_keys`. Choices the protocol leaves open, made here:

- one ready stream (and one retry set) per app, not one for all: an excluded app
  (paused, breaker open, full) is simply not read, so its backlog costs nothing
  and never stands in front of the other apps' messages. A lease call shares its
  `limit` among the open apps (with more apps than `limit`, the line of apps turns
  every call); within an app, oldest due first (a retry joins the end of its
  stream when its time comes);
- a lease's deadline, in the record and in the `leases` sorted set (by the
  caller's clock), decides when it has expired; XAUTOCLAIM, after `lease_s` of
  real idle time, takes over stream entries a dead consumer read but never
  leased. Either way the record decides: a live lease is never taken;
- while `sending`, next_attempt_at is the lease deadline; every settle but
  RELEASE counts an attempt; a settlement with no error keeps the last error;
  list() items and leased records carry no events (as the SQLite engine);
- the send budget, nonces and pauses compare the caller's `now` with stored
  times (Redis TTLs only let Redis forget them): the contract's fake timelines
  work, and hosts need synchronised clocks (NTP) — a host running d seconds
  ahead can take at most d seconds of rate once;
- a settled record expires `retention_s` after it settled (or after its report).
  Counters and indexes still count it until `purge()` runs, which cleans up
  after expired records too (the `settled` set keeps what that needs);
- an idempotency key lives as long as its message: a field of a bucket hash
  (`RedisKeys.idempotency_bucket`), removed by purge with the record; a repeat
  before that answers the first message. A partitioned queue's keys (and keys stored
  before buckets) are strings living `retention_s` from enqueue, renewed when the
  message settles;
- `enqueue` writes all its messages in one MULTI/EXEC of scripts of at most
  ENQUEUE_CHUNK messages each: all or nothing for the whole call;
- `list()` walks the narrowest index of its filters (batch; else the smaller of
  status and app; else the app indexes of every app, merged) newest first and checks
  the other filters on each record. There is no index of all messages, nor of
  `delivered` ones (redis_scripts.UNINDEXED): each would cost every message as much
  memory as its app's index does. A recipient (touser) has no index either: filtering
  by one of these reads at most LIST_SCAN records per call, and a page may come back
  short with a cursor.

Durability is Redis's own: "stored" means in Redis's memory and, with
`appendonly yes`, in its AOF (`appendfsync always` loses nothing on a power cut,
`everysec` up to a second). Redis must run with `maxmemory-policy noeviction`:
an evicted key is a lost message. Scripts need Redis 7.0 or later.
"""

from __future__ import annotations

import functools
import math
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Concatenate, Final, Literal, ParamSpec, TypeVar

import orjson
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from wxgate.backends import redis_scripts as lua
from wxgate.backends.api_keys import ApiKeyStore
from wxgate.backends.audit import AuditLog
from wxgate.backends.base import (
    PENDING_REPORT_TTL_S,
    RECENT_SENDS_S,
    RECENTLY_SENT,
    RECORD_FIELDS,
    SENT_RESULTS,
    SETTLED,
    BackendError,
    Cancelled,
    DeadLetterFilter,
    Enqueued,
    Event,
    EventKind,
    IdempotencyConflict,
    Lease,
    ListFilter,
    MessageRecord,
    NewBatch,
    NewMessage,
    Page,
    Pause,
    PauseReason,
    Report,
    ReportApplied,
    Settlement,
    Status,
    StorageUnavailable,
    decode_record,
    first_events,
    send_burst,
    settle_change,
)
from wxgate.backends.caps import CapStore
from wxgate.backends.dedupe import DedupeStore
from wxgate.backends.grants import GrantStore
from wxgate.backends.guarded_tokens import GuardedTokenStore
from wxgate.backends.redis_api_keys import RedisApiKeyStore
from wxgate.backends.redis_audit import RedisAuditLog
from wxgate.backends.redis_caps import RedisCapStore
from wxgate.backends.redis_client import UNAVAILABLE, connect
from wxgate.backends.redis_dedupe import RedisDedupeStore
from wxgate.backends.redis_grants import RedisGrantStore
from wxgate.backends.redis_keys import GROUP, RedisKeys
from wxgate.backends.redis_suppressions import RedisSuppressionStore
from wxgate.backends.redis_templates import RedisTemplateStore
from wxgate.backends.redis_tokens import RedisTokenStore
from wxgate.backends.redis_webhooks import RedisWebhookOutbox
from wxgate.backends.webhook_outbox import WebhookOutbox
from wxgate.clock import Clock, SystemClock
from wxgate.wechat.tokenstore import TokenStore

_P = ParamSpec("_P")
_T = TypeVar("_T")

ENQUEUE_CHUNK: Final = 1000  # messages per script; a call is one MULTI/EXEC of them
DIGEST_SEPARATOR: Final = "\x1f"  # a dedupe key holds "<id>\x1f<digest>" (redis_scripts)
PROMOTE_MAX: Final = 1000  # retries moved back per app per lease call
MAX_READ_ROUNDS: Final = 3  # stream reads per lease call while apps may have more
LIST_SCAN: Final = 2000  # records one list() call reads at most
LIST_STEP: Final = 200  # index entries read per round trip
PURGE_CHUNK: Final = 500
REPLAY_CHUNK: Final = 500
PROBE_TTL_MS: Final = 60_000  # the readiness probe's key expires on its own
RESUME_CHUNK: Final = 500  # held-back messages made due per script when a pause is lifted
BUDGET_IDLE_S: Final = 60  # beyond refilling, how long an idle bucket is kept

_UNAVAILABLE: Final = UNAVAILABLE
_PAYLOAD_AT: Final = RECORD_FIELDS.index("payload")
_ID_AT: Final = RECORD_FIELDS.index("id")
_CREATED_AT: Final = RECORD_FIELDS.index("created_at")
_SINCE_CREATED: Final = (RECORD_FIELDS.index("updated_at"), RECORD_FIELDS.index("next_attempt_at"))
_SCRIPTS: Final = (
    lua.ENQUEUE, lua.PROMOTE, lua.LEASE, lua.SETTLE, lua.KEEP_REPORT, lua.REPORT, lua.REPLAY,
    lua.CANCEL,
    lua.PURGE, lua.REMEMBER_NONCE, lua.TAKE_BUDGET, lua.MAKE_DUE, lua.CLAIM, lua.TOUCH_CLAIM,
)  # fmt: skip


def _storage_call(
    method: Callable[Concatenate[RedisBackend, _P], Awaitable[_T]],
) -> Callable[Concatenate[RedisBackend, _P], Awaitable[_T]]:
    """Redis's errors as the storage contract's: unreachable -> StorageUnavailable."""

    @functools.wraps(method)
    async def call(self: RedisBackend, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._state != "open":
            raise StorageUnavailable(f"the Redis backend is {self._state}, not open")
        try:
            return await method(self, *args, **kwargs)
        except NoScriptError as exc:
            # Redis restarted or was flushed: nothing of the call ran; load them again.
            self._scripts_loaded = False
            raise StorageUnavailable("Redis had lost the engine's scripts") from exc
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}") from exc
        except (RedisError, RedisClusterException) as exc:
            raise BackendError(f"Redis refused a command: {exc}") from exc

    return call


def _num(value: float) -> str:
    """A time as a script argument: exact, and a valid JSON number."""
    return repr(float(value))


def _opt(value: object) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class _Ref:
    """What a queue entry names: the message and the keys its scripts need."""

    id: str
    app: str
    batch_id: str | None

    @classmethod
    def of(cls, text: str) -> _Ref:
        message_id, app, batch_id = orjson.loads(text)
        return cls(message_id, app, batch_id or None)

    def text(self) -> str:
        return orjson.dumps([self.id, self.app, self.batch_id or ""]).decode()


@dataclass(frozen=True, slots=True)
class _Found:
    """A message a lease call found: a stream entry (read or claimed) or an expired lease."""

    ref_text: str
    entry: str = ""  # "" for an expired lease found in the leases set
    # Where it stands in line: claimed entries, then expired leases, then new entries,
    # each kind by stream id (what orders the leases of several partitions).
    order: tuple[int, int, int] = (1, 0, 0)

    @property
    def ref(self) -> _Ref:
        return _Ref.of(self.ref_text)

    @classmethod
    def entry_of(cls, ref_text: str, entry: str, kind: int) -> _Found:
        ms, seq = entry.split("-")
        return cls(ref_text, entry, (kind, int(ms), int(seq)))


@dataclass(frozen=True, slots=True)
class _LeaseCall:
    owner: str
    token: str
    now: str
    deadline: str
    deadline_at: float
    excluded: frozenset[str]


class RedisBackend:
    """The distributed engine (see the module docstring)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "wxgate",
        retention_s: int = 7 * 24 * 3600,
        clock: Clock | None = None,
        consumer: str | None = None,
        cluster: bool = False,
        partitions: int = 1,
    ) -> None:
        if retention_s < 2:
            raise ValueError("retention_s must be at least 2 seconds")
        self._keys = RedisKeys(prefix, tagged=cluster, partitions=partitions)
        self._parts = [self._keys.at(p) for p in range(partitions)]
        # Each handle leases from the partitions in turn, starting at a partition of its
        # own, so that workers spread over them.
        self._next_part = secrets.randbelow(partitions)
        self._retention_s = int(retention_s)
        self._clock = clock if clock is not None else SystemClock()
        self._consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        # Connections are made on first use, so a Redis that is down at start-up
        # shows as "not ready" instead of stopping the process.
        # With `cluster`, `url` is a seed node of a Redis Cluster (redis_client).
        self._cluster = cluster
        self._client: Any = connect(url, cluster=cluster)
        self._shas = {text: self._client.register_script(text).sha for text in _SCRIPTS}
        self._scripts_loaded = False
        self._claim_cursors: dict[str, str] = {}
        self._rotation = 0  # which app is first in line for this handle's next read
        self._status_indexes = [[k.index_status(status) for status in Status] for k in self._parts]
        # A restart or failover is StorageUnavailable here too, as for every queue call.
        self._tokens = GuardedTokenStore(RedisTokenStore(self._client, self._keys), _UNAVAILABLE)
        self._templates = RedisTemplateStore(self._client, self._keys)
        self._suppressions = RedisSuppressionStore(self._client, self._keys)
        self._grants = RedisGrantStore(self._client, self._keys, _UNAVAILABLE)
        self._caps = RedisCapStore(self._client, self._keys)
        self._dedupe = RedisDedupeStore(self._client, self._keys)
        self._api_keys = RedisApiKeyStore(self._client, self._keys)
        self._audit = RedisAuditLog(self._client, self._keys)

        self._webhooks = RedisWebhookOutbox(self._client, self._keys, _UNAVAILABLE)
        self._state: Literal["new", "open", "closed"] = "new"

    @property
    def keys(self) -> RedisKeys:
        return self._keys

    @property
    def consumer(self) -> str:
        """This handle's consumer name in the ready streams' group."""
        return self._consumer

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        if self._state == "new":
            self._state = "open"

    async def close(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        await self._client.aclose()

    async def ping(self) -> bool:
        if self._state != "open":
            return False
        try:
            return bool(await self._client.ping())
        except (RedisError, RedisClusterException):
            return False

    async def writable(self) -> bool:
        # A write that persists like any other: Redis refuses it (MISCONF, OOM) when it
        # could not write its AOF or snapshot, or has no memory left.
        if self._state != "open":
            return False
        try:
            return bool(await self._client.set(self._keys.write_probe, "1", px=PROBE_TTL_MS))
        except (RedisError, RedisClusterException):
            return False

    # -- scripts -----------------------------------------------------------------------

    async def _pipeline(self, *, transaction: bool = False) -> Any:
        if not self._scripts_loaded:
            if self._cluster:  # SCRIPT LOAD goes to every primary
                for text in _SCRIPTS:
                    await self._client.script_load(text)
            else:
                pipe = self._client.pipeline(transaction=False)
                for text in _SCRIPTS:
                    pipe.script_load(text)
                await pipe.execute()
            self._scripts_loaded = True
        return self._client.pipeline(transaction=transaction)

    def _queue(self, pipe: Any, script: str, keys: Sequence[str], args: Sequence[object]) -> None:
        pipe.evalsha(self._shas[script], len(keys), *keys, *args)

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        pipe = await self._pipeline()
        self._queue(pipe, script, keys, args)
        [result] = await pipe.execute()
        return result

    def _at(self, message_id: str) -> RedisKeys:
        """The keys of the partition a message lives in."""
        return self._parts[self._keys.partition_of(message_id)]

    def _book(self, k: RedisKeys, app: str, batch_id: str | None, message_key: str) -> list[str]:
        """Counters and status indexes a status change updates (see redis_scripts), in
        partition `k`."""
        batch = k.batch(batch_id) if batch_id else message_key
        return [k.counts, k.app_counts(app), batch, *self._status_indexes[k.partition]]

    # -- intake ------------------------------------------------------------------------

    @_storage_call
    async def enqueue(
        self, messages: Sequence[NewMessage], now: float, batch: NewBatch | None = None
    ) -> list[Enqueued]:
        if not messages:
            return []
        if self._keys.partitioned:
            return await self._enqueue_partitioned(messages, now, batch)
        chunks = range(0, len(messages), ENQUEUE_CHUNK)
        if len(chunks) > 1:
            # MULTI/EXEC does not undo the chunks before a refused one: every key is
            # checked before the transaction (and again by each chunk's script, which
            # writes nothing of its chunk on a conflict).
            await self._check_dedupe(messages, batch)
        pipe = await self._pipeline(transaction=len(chunks) > 1)
        for start in chunks:
            chunk = messages[start : start + ENQUEUE_CHUNK]
            keys, args = self._enqueue_call(self._keys, chunk, now, batch)
            self._queue(pipe, lua.ENQUEUE, keys, args)
        firsts: list[str] = []
        for start, answer in zip(chunks, await pipe.execute(), strict=True):
            if answer and answer[0] == "!":
                raise self._conflict(messages[start:], int(answer[1]), batch)
            firsts += answer
        return await self._enqueued(messages, firsts)

    def _dedupe_key(self, m: NewMessage, batch: NewBatch | None) -> str | None:
        """The key that deduplicates `m`: its caller's key, or its place in a keyed batch."""
        if m.idempotency_key:
            return self._keys.idempotency(m.app, m.idempotency_key)
        if batch is not None and m.batch_id and m.batch_position is not None:
            return self._keys.batch_position(m.batch_id, m.batch_position)
        return None

    def _enqueue_call(
        self,
        k: RedisKeys,
        messages: Sequence[NewMessage],
        now: float,
        batch: NewBatch | None,
        claimed: bool = False,
    ) -> tuple[list[str], list[object]]:
        """ENQUEUE's keys and values for `messages`, all of partition `k`; `claimed`: their
        dedupe keys were claimed before (a partitioned queue), each is stored by its id."""
        batch_hash = k.batch(batch.id) if batch is not None else k.counts
        keys = [k.counts, k.apps, batch_hash, k.settled, *self._status_indexes[k.partition]]
        args: list[object] = [_num(now), self._retention_s, self._retention_s]
        args.append(batch.digest if batch is not None and not claimed else "")
        for m in messages:
            message_key = k.message(m.id)
            dedupe = None if claimed else self._dedupe_key(m, batch)
            batch_key = k.batch(m.batch_id) if m.batch_id else message_key
            batch_index = k.index_batch(m.batch_id) if m.batch_id else message_key
            # One queue keeps an idempotency key as a field of its bucket (and still
            # finds one a version before buckets stored under `dedupe`).
            bucketed = dedupe is not None and m.idempotency_key is not None
            bucket = k.idempotency_bucket(m.app, m.idempotency_key or "") if bucketed else None
            keys += [message_key, dedupe or message_key, k.ready(m.app), k.retry(m.app)]
            keys += [k.app_counts(m.app), k.index_app(m.app), batch_key, batch_index]
            keys += [k.hooks(m.app), bucket or message_key]
            flag = "x" if claimed else "h" if bucketed else "1" if dedupe else ""
            args += _enqueue_args(m, now, flag)
        return keys, args

    async def _enqueue_partitioned(
        self, messages: Sequence[NewMessage], now: float, batch: NewBatch | None
    ) -> list[Enqueued]:
        """Each message into its id's partition: its dedupe key claimed first, in a slot of
        its own, naming the id; then each partition's messages stored by id (a message
        whose key names another id takes that id: a repeat, stored unless it is). A crash
        between the steps leaves claims whose retry stores their messages."""
        stored = await self._claim_dedupe(messages, batch)
        parts: dict[int, list[int]] = {}
        for n, m in enumerate(stored):
            parts.setdefault(self._keys.partition_of(m.id), []).append(n)
        pipe = await self._pipeline()
        calls: list[list[int]] = []
        for p, members in parts.items():
            for start in range(0, len(members), ENQUEUE_CHUNK):
                chunk = members[start : start + ENQUEUE_CHUNK]
                keys, args = self._enqueue_call(
                    self._parts[p], [stored[n] for n in chunk], now, batch, claimed=True
                )
                self._queue(pipe, lua.ENQUEUE, keys, args)
                calls.append(chunk)
        firsts = [""] * len(stored)
        for chunk, answer in zip(calls, await pipe.execute(), strict=True):
            for n, first in zip(chunk, answer, strict=True):
                firsts[n] = first
        return await self._enqueued(stored, firsts)

    async def _claim_dedupe(
        self, messages: Sequence[NewMessage], batch: NewBatch | None
    ) -> list[NewMessage]:
        """Claim the batch's digest and each message's dedupe key; the messages, each
        with the id its key names. IdempotencyConflict (and this call's claims let go)
        when one is held for a request with another digest."""
        k, ttl = self._keys, self._retention_s
        pipe = await self._pipeline()
        claims: list[tuple[int | None, str, str]] = []  # (message index, key, value)
        if batch is not None and batch.digest:
            claims.append((None, k.batch_digest(batch.id), batch.digest))
        for n, m in enumerate(messages):
            if (key := self._dedupe_key(m, batch)) is not None:
                claims.append((n, key, m.id + DIGEST_SEPARATOR + m.digest))
        if not claims:
            return list(messages)
        for _, key, value in claims:
            self._queue(pipe, lua.CLAIM, [key], [value, ttl])
        held = await pipe.execute()
        stored = list(messages)
        conflict: IdempotencyConflict | None = None
        for (n, _, _), value in zip(claims, held, strict=True):
            if not value:
                continue
            if n is None:
                if batch is not None and value != batch.digest:
                    conflict = IdempotencyConflict(batch.key)
                continue
            m = messages[n]
            first, _, digest = value.partition(DIGEST_SEPARATOR)
            if digest and m.digest and digest != m.digest:
                conflict = conflict or IdempotencyConflict(
                    m.idempotency_key or (batch.key if batch else "")
                )
            stored[n] = replace(m, id=first)
        if conflict is not None:
            mine = [
                (key, value.partition(DIGEST_SEPARATOR)[0])
                for (_, key, value), answer in zip(claims, held, strict=True)
                if not answer
            ]
            await self._touch_claims(mine, None)
            raise conflict
        return stored

    async def _touch_claims(self, claims: Sequence[tuple[str, str]], ttl: int | None) -> None:
        """Renew (`ttl`) or delete (None) claimed dedupe keys, each while it names its id."""
        if not claims:
            return
        pipe = await self._pipeline()
        for key, message_id in claims:
            self._queue(pipe, lua.TOUCH_CLAIM, [key], [message_id, "" if ttl is None else ttl])
        await pipe.execute()

    async def _check_dedupe(self, messages: Sequence[NewMessage], batch: NewBatch | None) -> None:
        """IdempotencyConflict when a key of the call is stored for another request."""
        pipe = self._client.pipeline(transaction=False)
        if batch is not None:
            pipe.hget(self._keys.batch(batch.id), "digest")
        dedupes = [(m, self._dedupe_key(m, batch)) for m in messages]
        keyed = [(m, key) for m, key in dedupes if key is not None]
        for m, key in keyed:
            pipe.get(key)
            if m.idempotency_key:  # in its bucket (in `key` if stored before buckets)
                pipe.hget(
                    self._keys.idempotency_bucket(m.app, m.idempotency_key), m.idempotency_key
                )
        answers = await pipe.execute()
        if batch is not None:
            stored = answers.pop(0)
            if stored and batch.digest and stored != batch.digest:
                raise IdempotencyConflict(batch.key)
        found = iter(answers)
        for m, _ in keyed:
            value = next(found)
            if m.idempotency_key:
                value = next(found) or value
            stored = value.partition(DIGEST_SEPARATOR)[2] if value else ""
            if stored and m.digest and stored != m.digest:
                raise IdempotencyConflict(m.idempotency_key or (batch.key if batch else ""))

    @staticmethod
    def _conflict(
        chunk: Sequence[NewMessage], position: int, batch: NewBatch | None
    ) -> IdempotencyConflict:
        """The conflict a script reported: message `position` (1-based), or 0: the batch."""
        if position == 0 or not chunk[position - 1].idempotency_key:
            return IdempotencyConflict(batch.key if batch is not None else "")
        return IdempotencyConflict(chunk[position - 1].idempotency_key or "")

    async def _enqueued(self, messages: Sequence[NewMessage], firsts: list[str]) -> list[Enqueued]:
        """The answers; a repeated key's answer carries its first message's current status."""
        repeated = sorted({first for first in firsts if first})
        status: dict[str, Status] = {}
        if repeated:
            pipe = self._client.pipeline(transaction=False)
            for message_id in repeated:
                pipe.hmget(self._keys.message(message_id), lua.either("status"))
            for message_id, found in zip(repeated, await pipe.execute(), strict=True):
                [value] = lua.picked(found)
                # None only if the first message was purged in the instant since the
                # script saw its key; it was queued when it was stored.
                status[message_id] = Status(value) if value else Status.QUEUED
        return [
            Enqueued(first, status[first], False) if first else Enqueued(m.id, m.status, True)
            for m, first in zip(messages, firsts, strict=True)
        ]

    # -- the queue ---------------------------------------------------------------------

    @_storage_call
    async def lease_batch(
        self,
        worker_id: str,
        limit: int,
        lease_s: float,
        now: float,
        exclude_apps: frozenset[str] = frozenset(),
    ) -> list[Lease]:
        if limit <= 0:
            return []
        call = _LeaseCall(
            owner=worker_id,
            token=secrets.token_hex(8),  # one per call: any re-lease gets another
            now=_num(now),
            deadline=_num(now + lease_s),
            deadline_at=now + lease_s,
            excluded=exclude_apps,
        )
        # The partitions in turn, from the one after where this handle's last call began.
        start = self._next_part
        self._next_part = (start + 1) % len(self._parts)
        leases: list[tuple[tuple[int, int, int], Lease]] = []
        for step in range(len(self._parts)):
            k = self._parts[(start + step) % len(self._parts)]
            leases += await self._lease_in(k, call, limit - len(leases), lease_s)
            if len(leases) >= limit:
                break
        if len(self._parts) > 1:
            leases.sort(key=lambda item: item[0])  # stable: one partition's line as it was
        return [lease for _, lease in leases]

    async def _lease_in(
        self, k: RedisKeys, call: _LeaseCall, limit: int, lease_s: float
    ) -> list[tuple[tuple[int, int, int], Lease]]:
        """Up to `limit` leases from partition `k`, each with its place in line."""
        pipe = await self._pipeline()
        pipe.smembers(k.apps)
        pipe.zrangebyscore(k.leases, "-inf", call.now, start=0, num=limit)
        apps, expired = await pipe.execute()
        open_apps = sorted(set(apps) - call.excluded)
        claimed = await self._promote_and_claim(k, open_apps, call, limit, lease_s)
        # Claimed entries are the oldest, then the expired leases, then new entries.
        leases = await self._lease_found(call, claimed + [_Found(ref) for ref in expired], limit)
        for _ in range(MAX_READ_ROUNDS):
            if len(leases) >= limit or not open_apps:
                break
            found, open_apps = await self._read_new(k, open_apps, limit - len(leases))
            leases += await self._lease_found(call, found, limit - len(leases))
        return leases

    async def _promote_and_claim(
        self, k: RedisKeys, apps: list[str], call: _LeaseCall, limit: int, lease_s: float
    ) -> list[_Found]:
        """Move due retries to their streams; take over entries idle past a lease."""
        if not apps:
            return []
        pipe = await self._pipeline()
        for app in apps:
            self._queue(pipe, lua.PROMOTE, [k.retry(app), k.ready(app)], [call.now, PROMOTE_MAX])
        idle_ms = max(1, int(lease_s * 1000))
        for app in apps:
            cursor = self._claim_cursors.get(k.ready(app), "0-0")
            pipe.xautoclaim(k.ready(app), GROUP, self._consumer, idle_ms, cursor, count=limit)
        answers = await pipe.execute()
        found: list[_Found] = []
        for app, (cursor, entries, _deleted) in zip(apps, answers[len(apps) :], strict=True):
            self._claim_cursors[k.ready(app)] = cursor
            found += [
                _Found.entry_of(fields["ref"], entry, 0) for entry, fields in entries if fields
            ]
        return found

    async def _read_new(
        self, k: RedisKeys, apps: list[str], room: int
    ) -> tuple[list[_Found], list[str]]:
        """New entries, `room` at most, shared among the apps; and the apps that may have
        more. One XREADGROUP per app, each with its own count, in one round trip."""
        shares = _shares(apps, room, self._rotation)
        self._rotation += len(shares)
        pipe = self._client.pipeline(transaction=False)
        for app, share in shares:
            streams = {k.ready(app): ">"}
            pipe.xreadgroup(GROUP, self._consumer, streams, count=share)
        found: list[_Found] = []
        more: list[str] = []
        for (app, share), answer in zip(shares, await pipe.execute(), strict=True):
            entries = answer[0][1] if answer else []
            if len(entries) == share:
                more.append(app)
            found += [_Found.entry_of(fields["ref"], entry, 2) for entry, fields in entries]
        found.sort(key=lambda item: item.order)  # oldest first across the apps
        return found, more

    async def _lease_found(
        self, call: _LeaseCall, found: list[_Found], room: int
    ) -> list[tuple[tuple[int, int, int], Lease]]:
        """Lease up to `room` of `found` (each with its place in line); the stream entries
        past it are set aside (back to their retry set, due now); an expired lease of an
        excluded app goes back to queued."""
        if not found:
            return []
        pipe = await self._pipeline()
        taken = 0
        queued = []
        for item in found:
            ref = item.ref  # parsed once: the keys and the arguments both need it
            if ref.app in call.excluded:
                mode = "park"
            elif taken < room:
                mode = "lease"
                taken += 1
            elif item.entry:
                mode = "park"
            else:
                continue  # an expired lease past `room` waits in the leases set
            self._queue(
                pipe, lua.LEASE, self._lease_keys(ref), self._lease_args(call, item, ref, mode)
            )
            queued.append(item.order)
        leases = []
        for order, fields in zip(queued, await pipe.execute(), strict=True):
            if fields:
                record = _decoded(fields)
                leases.append((order, Lease(record, call.token, call.deadline_at)))
        return leases

    def _lease_keys(self, ref: _Ref) -> list[str]:
        k = self._at(ref.id)
        message_key = k.message(ref.id)
        return [
            message_key,
            k.ready(ref.app),
            k.retry(ref.app),
            k.leases,
            *self._book(k, ref.app, ref.batch_id, message_key),
        ]

    @staticmethod
    def _lease_args(call: _LeaseCall, item: _Found, ref: _Ref, mode: str) -> list[object]:
        return [
            ref.id, item.ref_text, item.entry, call.now, call.deadline, call.token, call.owner,
            mode, call.now,
        ]  # fmt: skip

    @_storage_call
    async def settle(self, settlements: Sequence[Settlement], now: float) -> list[bool]:
        if not settlements:
            return []
        pipe = await self._pipeline()
        for s in settlements:
            self._queue(pipe, lua.SETTLE, self._settle_keys(s), self._settle_args(s, now))
        written = [answer == 1 for answer in await pipe.execute()]
        if self._keys.partitioned:
            # A settled message's claimed dedupe key lives as long as it does.
            renew = []
            for s, done in zip(settlements, written, strict=True):
                record = s.lease.record
                key = self._stored_dedupe_key(
                    record.app, record.idempotency_key, record.batch_id, record.batch_position
                )
                if done and key and settle_change(s, now).status in SETTLED:
                    renew.append((key, record.id))
            await self._touch_claims(renew, self._retention_s)
        return written

    def _settle_keys(self, s: Settlement) -> list[str]:
        record = s.lease.record
        k = self._at(record.id)
        message_key = k.message(record.id)
        stores_msgid = s.outcome.keeps_msgid and s.msgid is not None
        dedupe = None
        if not self._keys.partitioned:
            dedupe = self._stored_dedupe_key(
                record.app, record.idempotency_key, record.batch_id, record.batch_position
            )
        return [
            message_key,
            k.ready(record.app),
            k.retry(record.app),
            k.leases,
            k.dead,
            k.settled,
            dedupe or message_key,
            k.msgid_bucket(record.app, s.msgid)
            if stores_msgid and s.msgid is not None
            else message_key,
            k.pending_report(record.app, s.msgid)
            if stores_msgid and s.msgid is not None
            else message_key,
            k.hooks(record.app),
            k.recent_sends(record.app, record.touser),
            k.pause(record.app),
            *self._book(k, record.app, record.batch_id, message_key),
            k.msgid_bucket(record.app, record.msgid) if record.msgid is not None else message_key,
        ]

    def _settle_args(self, s: Settlement, now: float) -> list[object]:
        change = settle_change(s, now)
        record = s.lease.record
        return [
            change.id,
            change.token,
            _num(now),
            change.status.value,
            change.counted,
            "" if change.next_attempt_at is None else _num(change.next_attempt_at),
            _opt(change.msgid),
            "1" if change.answered else "",
            _opt(change.errcode),
            _opt(change.errmsg),
            _opt(change.category),
            _line(change.event),
            self._retention_s,
            RECENT_SENDS_S,
            "1" if change.while_paused else "",
            _Ref(record.id, record.app, record.batch_id).text(),
        ]

    @_storage_call
    async def cancel(self, ids: Sequence[str], now: float) -> list[Cancelled]:
        if not ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for message_id in ids:
            pipe.hmget(self._keys.message(message_id), lua.either("app", "batch_id"))
        found = [lua.picked(values) for values in await pipe.execute()]
        line = _line(Event(now, EventKind.CANCELLED))
        pipe = await self._pipeline()
        for message_id, (app, batch_id) in zip(ids, found, strict=True):
            if app is None:
                continue
            k = self._at(message_id)
            message_key = k.message(message_id)
            keys = [message_key, k.retry(app), k.settled, k.hooks(app)]
            keys += self._book(k, app, batch_id, message_key)
            ref = _Ref(message_id, app, batch_id).text()
            args = [message_id, _num(now), line, self._retention_s, ref]
            self._queue(pipe, lua.CANCEL, keys, args)
        answers = iter(await pipe.execute())
        results = []
        for message_id, (app, _) in zip(ids, found, strict=True):
            answer = next(answers) if app is not None else None
            if not answer:
                results.append(Cancelled(message_id, None, False))
            else:
                results.append(Cancelled(message_id, Status(answer[0]), answer[1] == 1))
        return results

    @_storage_call
    async def replay(self, ids: Sequence[str], now: float) -> int:
        return await self._replay(ids, now)

    async def _replay(self, ids: Sequence[str], now: float) -> int:
        if not ids:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for message_id in ids:
            pipe.hmget(
                self._keys.message(message_id),
                lua.either("app", "batch_id", "idempotency_key", "batch_position"),
            )
        found = [
            (message_id, app, batch_id, key, position)
            for message_id, (app, batch_id, key, position) in zip(
                ids, map(lua.picked, await pipe.execute()), strict=True
            )
            if app is not None
        ]
        if not found:
            return 0
        event = _line(Event(now, EventKind.REPLAYED))
        pipe = await self._pipeline()
        dedupes = []
        for message_id, app, batch_id, key, position in found:
            dedupe = self._stored_dedupe_key(
                app, key, batch_id, None if position is None else int(position)
            )
            dedupes.append(dedupe)
            ref = _Ref(message_id, app, batch_id).text()
            self._queue(
                pipe,
                lua.REPLAY,
                self._replay_keys(message_id, app, batch_id, dedupe),
                [message_id, _num(now), event, self._retention_s, ref],
            )
        moved = await pipe.execute()
        if self._keys.partitioned:
            # The claimed key of a message queued again lives as long as it does.
            renew = [
                (dedupe, item[0])
                for item, dedupe, done in zip(found, dedupes, moved, strict=True)
                if done and dedupe
            ]
            await self._touch_claims(renew, self._retention_s)
        return sum(moved)

    def _replay_keys(
        self, message_id: str, app: str, batch_id: str | None, dedupe: str | None
    ) -> list[str]:
        k = self._at(message_id)
        message_key = k.message(message_id)
        if self._keys.partitioned:
            dedupe = None  # in a slot of its own: renewed after the script
        return [
            message_key,
            k.ready(app),
            k.settled,
            k.dead,
            dedupe or message_key,
            *self._book(k, app, batch_id, message_key),
        ]

    def _stored_dedupe_key(
        self, app: str, key: str | None, batch_id: str | None, position: int | None
    ) -> str | None:
        """The dedupe key a stored message may own (its lifetime is renewed with it):
        its caller's key, or its batch position (owned only in a keyed batch)."""
        if key:
            return self._keys.idempotency(app, key)
        if batch_id and position is not None:
            return self._keys.batch_position(batch_id, position)
        return None

    @_storage_call
    async def replay_dead(self, flt: DeadLetterFilter, now: float) -> int:
        low = "-inf" if flt.since is None else _num(flt.since)
        high = "+inf" if flt.until is None else _num(flt.until)
        moved = 0
        for k in self._parts:
            skipped = 0
            while True:
                refs = await self._client.zrangebyscore(
                    k.dead, low, high, start=skipped, num=REPLAY_CHUNK
                )
                if not refs:
                    break
                chosen = await self._dead_matching([_Ref.of(text) for text in refs], flt)
                count = await self._replay(chosen, now)
                moved += count
                # What was replayed left the set; what was not is stepped over next time.
                skipped += len(refs) - count
        return moved

    async def _dead_matching(self, refs: list[_Ref], flt: DeadLetterFilter) -> list[str]:
        refs = [ref for ref in refs if flt.app is None or ref.app == flt.app]
        if flt.errcode is None:
            return [ref.id for ref in refs]
        pipe = self._client.pipeline(transaction=False)
        for ref in refs:
            pipe.hmget(self._keys.message(ref.id), lua.either("last_errcode"))
        codes = [lua.picked(values)[0] for values in await pipe.execute()]
        wanted = str(flt.errcode)
        return [ref.id for ref, code in zip(refs, codes, strict=True) if code == wanted]

    # -- delivery reports --------------------------------------------------------------

    @_storage_call
    async def apply_report(self, report: Report, now: float) -> ReportApplied:
        app, target = report.app, report.status
        kept = {"status": report.text, "target": target.value, "received_at": _num(now)}
        message_id = await self._find_or_keep_report(app, report.msgid, orjson.dumps(kept))
        if message_id is None:
            return ReportApplied(None, None, False)
        k = self._at(message_id)
        message_key = k.message(message_id)
        [batch_id] = lua.picked(await self._client.hmget(message_key, lua.either("batch_id")))
        keys = [message_key, k.settled, k.hooks(app)]
        keys += self._book(k, app, batch_id, message_key)
        args = [message_id, report.text, target.value, _num(now), self._retention_s, ""]
        answer = await self._run(lua.REPORT, keys, args)
        if answer is None:  # the message was purged; its msgid key was going with it
            return ReportApplied(None, None, False)
        status, changed = answer
        return ReportApplied(message_id, Status(status), changed == 1)

    async def _find_or_keep_report(self, app: str, msgid: int, kept: bytes) -> str | None:
        """The id of the message WeChat answered `msgid` for; else the report is kept for
        the settle that stores the msgid. A partitioned queue looks in every partition (a
        msgid is in one at most) and keeps the report in each, as the settle of whichever
        partition holds the message takes it from its own (the others expire)."""
        if not self._keys.partitioned:
            k = self._keys
            return await self._run(
                lua.KEEP_REPORT,
                [k.msgid(app, msgid), k.pending_report(app, msgid), k.msgid_bucket(app, msgid)],
                [kept.decode(), PENDING_REPORT_TTL_S, msgid],
            )
        pipe = self._client.pipeline(transaction=False)
        for k in self._parts:
            pipe.hget(k.msgid_bucket(app, msgid), str(msgid))
            pipe.get(k.msgid(app, msgid))
        found = [message_id for message_id in await pipe.execute() if message_id]
        if found:
            return str(found[0])
        # Per partition, KEEP_REPORT is atomic with the settle: either the settle finds
        # the report, or the report finds the msgid.
        pipe = await self._pipeline()
        for k in self._parts:
            self._queue(
                pipe,
                lua.KEEP_REPORT,
                [k.msgid(app, msgid), k.pending_report(app, msgid), k.msgid_bucket(app, msgid)],
                [kept.decode(), PENDING_REPORT_TTL_S, msgid],
            )
        found = [message_id for message_id in await pipe.execute() if message_id]
        return str(found[0]) if found else None

    @_storage_call
    async def apply_sent_result(
        self, message_id: str, status: Status, text: str, now: float
    ) -> ReportApplied:
        if status not in SENT_RESULTS:
            raise ValueError(f"a sent event settles a message delivered or failed, not {status}")
        k = self._at(message_id)
        message_key = k.message(message_id)
        app, batch_id = lua.picked(
            await self._client.hmget(message_key, lua.either("app", "batch_id"))
        )
        if app is None:
            return ReportApplied(None, None, False)
        keys = [message_key, k.settled, k.hooks(app)]
        keys += self._book(k, app, batch_id, message_key)
        args = [message_id, text, status.value, _num(now), self._retention_s, "1"]
        answer = await self._run(lua.REPORT, keys, args)
        if answer is None:
            return ReportApplied(None, None, False)
        stored, changed = answer
        return ReportApplied(message_id, Status(stored), changed == 1)

    @_storage_call
    async def remember_nonce(self, app: str, nonce: str, ttl_s: float, now: float) -> bool:
        args = [_num(now), _num(now + ttl_s), max(1, math.ceil(ttl_s))]
        return await self._run(lua.REMEMBER_NONCE, [self._keys.nonce(app, nonce)], args) == 1

    # -- shared worker state -----------------------------------------------------------

    @_storage_call
    async def pause_app(self, pause: Pause) -> None:
        value = orjson.dumps(
            {
                "reason": pause.reason,
                "since": pause.since,
                "until": pause.until,
                "errcode": pause.errcode,
                "note": pause.note,
            }
        )
        # A timed pause's key outlives its end; pauses() compares `until` with `now`.
        ttl = None if pause.until is None else max(1, math.ceil(pause.until - pause.since)) + 1
        # Each partition keeps a copy, which its settle script reads; the first partition's
        # is the one pauses() reads.
        for k in reversed(self._parts):
            pipe = self._client.pipeline(transaction=True)
            pipe.set(k.pause(pause.app), value, ex=ttl)
            if k.partition == 0:
                pipe.sadd(k.paused, pause.app)
            await pipe.execute()

    @_storage_call
    async def resume_app(self, app: str, now: float) -> bool:
        raw = await self._client.get(self._keys.pause(app))
        for k in self._parts[1:]:
            await self._client.delete(k.pause(app))
        if raw is None or not await self._client.delete(self._keys.pause(app)):
            return False
        until = orjson.loads(raw).get("until")
        if until is not None:
            for k in self._parts:
                await self._make_due(k, app, until, now)
        return True

    async def _make_due(self, k: RedisKeys, app: str, since: float, now: float) -> None:
        """What a timed pause held back (retry time >= its end) becomes due at `now`."""
        retry = k.retry(app)
        refs = await self._client.zrangebyscore(retry, since, "+inf")
        for start in range(0, len(refs), RESUME_CHUNK):
            chunk = refs[start : start + RESUME_CHUNK]
            keys = [retry, *(k.message(_Ref.of(ref).id) for ref in chunk)]
            await self._run(lua.MAKE_DUE, keys, [now, *chunk])

    @_storage_call
    async def pauses(self, now: float) -> dict[str, Pause]:
        apps = sorted(await self._client.smembers(self._keys.paused))
        if not apps:
            return {}
        values = await self._client.mget([self._keys.pause(app) for app in apps])
        found = {}
        for app, value in zip(apps, values, strict=True):
            if value is None:
                continue
            fields = orjson.loads(value)
            pause = Pause(app, **{**fields, "reason": PauseReason(fields["reason"])})
            if pause.until is None or pause.until > now:
                found[app] = pause
        return found

    @_storage_call
    async def take_send_budget(self, app: str, rate_per_s: float, want: int, now: float) -> int:
        if want <= 0 or rate_per_s <= 0:
            return 0
        capacity = send_burst(rate_per_s)
        idle_s = math.ceil(capacity / rate_per_s) + BUDGET_IDLE_S
        args = [_num(rate_per_s), _num(capacity), want, _num(now), idle_s]
        return int(await self._run(lua.TAKE_BUDGET, [self._keys.bucket(app)], args))

    def token_store(self) -> TokenStore:
        return self._tokens

    def template_store(self) -> RedisTemplateStore:
        return self._templates

    def suppression_store(self) -> RedisSuppressionStore:
        return self._suppressions

    def grant_store(self) -> GrantStore:
        return self._grants

    @_storage_call
    async def keep_sent_result(
        self,
        app: str,
        touser: str,
        template_id: str,
        result: tuple[Status, str],
        now: float,
        ttl_s: float,
    ) -> None:
        key = self._keys.pending_sent(app, touser, template_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.rpush(key, f"{result[0].value} {result[1]}")
            pipe.expire(key, max(1, math.ceil(ttl_s)))
            await pipe.execute()

    @_storage_call
    async def take_sent_result(
        self, app: str, touser: str, template_id: str, now: float
    ) -> tuple[Status, str] | None:
        raw = await self._client.lpop(self._keys.pending_sent(app, touser, template_id))
        if raw is None:
            return None
        status, _, text = str(raw).partition(" ")
        return Status(status), text

    def cap_store(self) -> CapStore:
        return self._caps

    def dedupe_store(self) -> DedupeStore:
        return self._dedupe

    def api_key_store(self) -> ApiKeyStore:
        return self._api_keys

    def audit_log(self) -> AuditLog:
        return self._audit

    def webhook_outbox(self) -> WebhookOutbox:
        return self._webhooks

    @_storage_call
    async def oldest_queued(self, apps: Sequence[str]) -> dict[str, float]:
        """Walks the queued and sending indexes from their oldest id (ULIDs sort by
        creation), at most LIST_SCAN records each: an app whose oldest waiting message
        lies beyond that is left out."""
        wanted, oldest = set(apps), {}
        for k in self._parts:
            for status in (Status.QUEUED, Status.SENDING):
                found = await self._oldest_in(k.index_status(status), wanted)
                for app, created in found.items():
                    oldest[app] = min(created, oldest.get(app, created))
        return oldest

    async def _oldest_in(self, index: str, wanted: set[str]) -> dict[str, float]:
        found: dict[str, float] = {}
        for start in range(0, LIST_SCAN, LIST_STEP):
            ids = await self._client.zrange(index, start, start + LIST_STEP - 1)
            pipe = self._client.pipeline(transaction=False)
            for message_id in ids:
                pipe.hmget(self._keys.message(message_id), lua.either("app", "created_at"))
            for app, created in map(lua.picked, await pipe.execute()):
                if app in wanted and app not in found and created is not None:
                    found[app] = float(created)
            if len(ids) < LIST_STEP or len(found) == len(wanted):
                break
        return found

    @_storage_call
    async def purge(self, older_than: float) -> int:
        total = 0
        for k in self._parts:
            total += await self._purge_in(k, older_than)
        return total

    async def _purge_in(self, k: RedisKeys, older_than: float) -> int:
        total = 0
        while True:
            members = await self._client.zrangebyscore(
                k.settled, "-inf", f"({_num(older_than)}", start=0, num=PURGE_CHUNK
            )
            if not members:
                return total
            pipe = await self._pipeline()
            for member in members:
                keys, args = self._purge_call(k, member)
                self._queue(pipe, lua.PURGE, keys, args)
            purged = await pipe.execute()
            total += sum(purged)
            if self._keys.partitioned:
                # A purged message's claimed key goes with it (in a slot of its own).
                gone = []
                for member, done in zip(members, purged, strict=True):
                    ref, _, key, _ = _settled_member(member)
                    if done and key:
                        gone.append((k.idempotency(ref.app, key), ref.id))
                await self._touch_claims(gone, None)
            if len(members) < PURGE_CHUNK:
                return total

    def _purge_call(self, k: RedisKeys, member: str) -> tuple[list[str], list[object]]:
        ref, status, key, msgid = _settled_member(member)
        message_key = k.message(ref.id)
        keys = [
            message_key,
            k.settled,
            k.dead,
            k.idempotency(ref.app, key) if key and not k.partitioned else message_key,
            k.msgid(ref.app, int(msgid)) if msgid else message_key,
            k.index_all,
            k.index_app(ref.app),
            k.index_batch(ref.batch_id) if ref.batch_id else message_key,
            *self._book(k, ref.app, ref.batch_id, message_key),
        ]
        one_queue = key and not k.partitioned
        keys.append(k.idempotency_bucket(ref.app, key) if one_queue else message_key)
        keys.append(k.msgid_bucket(ref.app, int(msgid)) if msgid else message_key)
        args = [member, ref.id, status, ref.text(), "1" if ref.batch_id else "", key, msgid]
        return keys, args

    # -- reads -------------------------------------------------------------------------

    @_storage_call
    async def get(self, message_id: str) -> MessageRecord | None:
        fields = await self._client.hgetall(self._keys.message(message_id))
        if not _stored(fields):
            return None
        return _record(message_id, fields)

    @_storage_call
    async def recent_sends(self, app: str, touser: str, since: float) -> list[MessageRecord]:
        pipe = self._client.pipeline(transaction=False)
        for k in self._parts:
            key = k.recent_sends(app, touser)
            pipe.zrevrangebyscore(key, "+inf", _num(since), start=0, num=100, withscores=True)
        scored = [item for found in await pipe.execute() for item in found]
        ids = [message_id for message_id, _ in sorted(scored, key=lambda item: -item[1])[:100]]
        return [
            record
            for record in await self._records(ids)
            if record is not None and record.status in RECENTLY_SENT
        ]

    @_storage_call
    async def batch_counts(self, batch_id: str) -> dict[Status, int] | None:
        found = [fields for fields in await self._each(lambda k: k.batch(batch_id)) if fields]
        return _summed(found) if found else None

    async def _each(self, key: Callable[[RedisKeys], str]) -> list[dict[str, str]]:
        """HGETALL of one hash in every partition."""
        if len(self._parts) == 1:
            return [await self._client.hgetall(key(self._keys))]
        pipe = self._client.pipeline(transaction=False)
        for k in self._parts:
            pipe.hgetall(key(k))
        return list(await pipe.execute())

    @_storage_call
    async def oldest(self, status: Status) -> MessageRecord | None:
        found = [await self._oldest_at(k, status) for k in self._parts]
        return min((r for r in found if r is not None), key=lambda r: r.id, default=None)

    async def _oldest_at(self, k: RedisKeys, status: Status) -> MessageRecord | None:
        if status in lua.UNINDEXED:  # its messages are found in the app indexes
            indexes = [k.index_app(app) for app in sorted(await self._client.smembers(k.apps))]
        else:
            indexes = [k.index_status(status)]
        lower = "-"
        for _ in range(LIST_SCAN // LIST_STEP):
            pipe = self._client.pipeline(transaction=False)
            for index in indexes:
                pipe.zrangebylex(index, lower, "+", start=0, num=LIST_STEP)
            found = sorted(message_id for ids in await pipe.execute() for message_id in ids)
            ids = found[:LIST_STEP]
            for record in await self._records(ids):
                if record is not None and record.status == status:
                    return record
            if len(ids) < LIST_STEP:
                return None
            lower = f"({ids[-1]}"
        return None

    @_storage_call
    async def counts(self, app: str | None = None) -> dict[Status, int]:
        return _summed(await self._each(lambda k: k.counts if app is None else k.app_counts(app)))

    @_storage_call
    async def list(self, flt: ListFilter, limit: int, cursor: str | None = None) -> Page:
        """Newest first; items carry no events (get() has them)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        indexes = await self._list_indexes(flt)
        items: list[MessageRecord] = []
        upper = "+" if cursor is None else f"({cursor}"
        scanned = 0
        while scanned < LIST_SCAN:
            ids = await self._newest(indexes, upper)
            for record in await self._records(ids):
                if record is not None and _matches(record, flt):
                    items.append(record)
                    if len(items) > limit:
                        return Page(items[:limit], items[limit - 1].id)
            if len(ids) < LIST_STEP:
                return Page(items, None)
            scanned += len(ids)
            upper = f"({ids[-1]}"
        # The scan budget is spent: a short page, continued after the last id read.
        return Page(items, upper[1:])

    async def _list_indexes(self, flt: ListFilter) -> list[str]:
        """The index `list()` walks: one, or with no filter the app indexes of every app."""
        parts = self._parts
        if flt.batch_id is not None:
            return [k.index_batch(flt.batch_id) for k in parts]
        candidates = []
        if flt.status is not None and flt.status not in lua.UNINDEXED:
            candidates.append([k.index_status(Status(flt.status)) for k in parts])
        if flt.app is not None:
            candidates.append([k.index_app(flt.app) for k in parts])
        if not candidates:
            pipe = self._client.pipeline(transaction=False)
            for k in parts:
                pipe.smembers(k.apps)
            return [
                k.index_app(app)
                for k, apps in zip(parts, await pipe.execute(), strict=True)
                for app in sorted(apps)
            ]
        if len(candidates) < 2:
            return candidates[0]
        pipe = self._client.pipeline(transaction=False)
        for candidate in candidates:
            for index in candidate:
                pipe.zcard(index)
        sizes = await pipe.execute()
        n = len(parts)
        totals = [sum(sizes[i * n : (i + 1) * n]) for i in range(len(candidates))]
        return candidates[totals.index(min(totals))]

    async def _newest(self, indexes: list[str], upper: str) -> list[str]:
        """The LIST_STEP newest ids below `upper` in the union of `indexes` (an id is in
        one app's index of one partition only: the newest of the union are among each
        one's newest)."""
        if len(indexes) == 1:
            return list(
                await self._client.zrevrangebylex(indexes[0], upper, "-", start=0, num=LIST_STEP)
            )
        pipe = self._client.pipeline(transaction=False)
        for index in indexes:
            pipe.zrevrangebylex(index, upper, "-", start=0, num=LIST_STEP)
        found = [message_id for ids in await pipe.execute() for message_id in ids]
        return sorted(found, reverse=True)[:LIST_STEP]

    async def _records(self, ids: Iterable[str]) -> list[MessageRecord | None]:
        """The records of `ids` (None for one that is gone), without their events."""
        ids = list(ids)
        pipe = self._client.pipeline(transaction=False)
        for message_id in ids:
            pipe.hgetall(self._keys.message(message_id))
        return [
            _record(message_id, fields, events=False) if _stored(fields) else None
            for message_id, fields in zip(ids, await pipe.execute(), strict=True)
        ]


def _enqueue_args(m: NewMessage, now: float, dedupe: str) -> list[object]:
    """ENQUEUE's values for one message (redis_scripts, in that order)."""
    events = first_events(m, now)
    verdict = m.verdict
    return [
        m.id, m.app, m.touser, m.template_id, orjson.dumps(m.payload).decode(),
        _opt(m.idempotency_key), _opt(m.trace_id), _opt(m.batch_id),
        _Ref(m.id, m.app, m.batch_id).text(), dedupe, m.digest,
        _opt(m.batch_position), m.status.value,
        _num(m.send_at if m.send_at is not None else now),
        "\n".join(_line(event) for event in events), len(events),
        m.kind.value, "1" if m.urgent else "", "" if m.send_at is None else _num(m.send_at),
        _opt(verdict.errcode if verdict else None), _opt(verdict.errmsg if verdict else None),
        "1" if m.notify else "", _opt(m.callback_url), _opt(m.idempotency_key),
    ]  # fmt: skip


def _line(event: Event) -> str:
    """An event as its record keeps it: `<at> <kind>[ <errcode>][<tab><note>]` (at as
    JSON writes it), 16 bytes less a line than JSON; a note with a line break makes it
    Event.to_json's object without an empty note or a null errcode (`_event` reads both,
    and the JSON lines of records stored before)."""
    if "\n" in event.note:
        item: dict[str, Any] = {"at": event.at, "kind": event.kind, "note": event.note}
        if event.errcode is not None:
            item["errcode"] = event.errcode
        return orjson.dumps(item).decode()
    head = orjson.dumps(event.at).decode() + " " + event.kind
    if event.errcode is not None:
        head += f" {event.errcode}"
    return head + "\t" + event.note if event.note else head


def _event(line: str) -> Event:
    """An event from its line (`_line`; a JSON object in records stored before)."""
    if line.startswith("{"):
        return Event.from_json(orjson.loads(line))
    head, _, note = line.partition("\t")
    at, kind, *errcode = head.split(" ")
    return Event(float(at), EventKind(kind), note, int(errcode[0]) if errcode else None)


def _shares(apps: list[str], room: int, rotation: int) -> list[tuple[str, int]]:
    """How many new entries to read from each app: `room` in all, as even as can be; with
    more apps than room, the apps first in line (the line turns with every call)."""
    start = rotation % len(apps)
    chosen = (apps[start:] + apps[:start])[:room]
    base, extra = divmod(room, len(chosen))
    return [(app, base + (1 if n < extra else 0)) for n, app in enumerate(chosen)]


# -- records -------------------------------------------------------------------------------


def _matches(record: MessageRecord, flt: ListFilter) -> bool:
    return (
        (flt.status is None or record.status == flt.status)
        and (flt.app is None or record.app == flt.app)
        and (flt.touser is None or record.touser == flt.touser)
        and (flt.batch_id is None or record.batch_id == flt.batch_id)
    )


def _per_status(fields: dict[str, str]) -> dict[Status, int]:
    return {status: int(fields.get(status.value, 0)) for status in Status}


def _summed(hashes: Iterable[dict[str, str]]) -> dict[Status, int]:
    """Messages per status, summed over the partitions' counters."""
    total = dict.fromkeys(Status, 0)
    for fields in hashes:
        for status, count in _per_status(fields).items():
            total[status] += count
    return total


def _decoded(values: Sequence[Any], events: list[Event] | None = None) -> MessageRecord:
    """decode_record, and the template id and recipient from the payload: a record keeps
    them only there (redis_scripts, ENQUEUE; a record stored before has them in fields of
    their own)."""
    record = decode_record(values, events)
    if not record.template_id:
        record.template_id = str(record.payload.get("template_id", ""))
    if record.touser is None:
        record.touser = str(record.payload.get("touser", ""))
    return record


def _names(fields: dict[str, str]) -> dict[str, str]:
    """The field names of a stored record: long in one stored before short names."""
    return lua.LONG_NAMES if "status" in fields else lua.SHORT_NAMES


def _stored(fields: dict[str, str]) -> bool:
    """Whether a record's hash (HGETALL) holds a record: a status, in either naming."""
    return "s" in fields or "status" in fields


def _settled_member(member: str) -> tuple[_Ref, str, str, str]:
    """ref, status, idempotency key, msgid of a `settled` member: [id, app, batch, status,
    key, msgid], or [ref, status, key, msgid] as written for a record stored before."""
    items = orjson.loads(member)
    if len(items) == 4:
        ref_text, status, key, msgid = items
        return _Ref.of(ref_text), status, key, msgid
    message_id, app, batch_id, status, key, msgid = items
    return _Ref(message_id, app, batch_id or None), status, key, msgid


def _record(message_id: str, fields: dict[str, str], *, events: bool = True) -> MessageRecord:
    """A record from its hash (HGETALL), its events included unless `events` is False."""
    names = _names(fields)
    values = [fields.get(names[name]) for name in RECORD_FIELDS]
    values[_ID_AT] = message_id  # a record keeps its id only in its key (one stored before: both)
    if names is lua.SHORT_NAMES:  # written only once they differ from created_at
        for at in _SINCE_CREATED:
            if values[at] is None:
                values[at] = values[_CREATED_AT]
    values[_PAYLOAD_AT] = lua.long_value(fields, lua.PAYLOAD_CHUNKS, "payload")
    if not events:
        return _decoded(values)
    text = lua.long_value(fields, lua.EVENTS_CHUNKS, "events")
    return _decoded(values, [_event(line) for line in text.split("\n")] if text else [])
