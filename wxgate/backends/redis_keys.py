"""Every Redis key the Redis engine and its token store use, under one prefix.

A key is `{prefix}:{kind}:{part}...`. On a Redis Cluster (`tagged`), a key that a Lua
script or a MULTI/EXEC touches together with other keys is `{prefix}:{{tag}}:...`
instead: the cluster hashes only the `{tag}` of such a key, so every key one script or
transaction touches lies in one slot (docs/design.md, "Redis Cluster"). The tags:

- `{q}`: the queue — records, their counters and indexes, the ready streams and
  retry sets, leases, dead letters, settled records, the webhook outbox, dedupe keys,
  msgids and pending reports, pauses: everything a message's scripts touch. With
  `partitions` > 1 the queue is that many queues, partition p tagged `{q<p>.<i>}`
  (`queue_tag`: its slot in the p-th of `partitions` equal shares of the slots, so
  the partitions spread over the primaries), a message in partition
  `partition_of(id)`; its dedupe keys then leave the queue for slots of their own
  (claimed before the message is stored: redis.py, `_enqueue_partitioned`);
- `{app=<app>}`: one app's access token, its fetch lock and fence, its send budget,
  its template registry and its suppression list;
- `{cap=<app>:<touser>}`: one recipient's send caps;
- `{apikeys}`: the API keys.

Keys only ever touched one at a time (grants, the dedupe window, nonces, the audit
log; a partitioned queue's dedupe keys) carry no tag and spread over the cluster. On
one redis-server the keys carry no tags: the names are those of the versions before
cluster support. Free-form parts (app names, idempotency keys, batch ids, nonces) are
escaped so that no two different part lists can ever spell the same key: `%` becomes
`%25` and `:` `%3A` (and, inside a tag, `{` `%7B` and `}` `%7D`, so that no part can
end the tag).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, replace
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

# The consumer group every worker of every process reads the ready streams in.
GROUP: Final = "wxgate-workers"
HOOKS_GROUP: Final = "wxgate-webhooks"  # the webhook dispatchers' group of the `hooks` streams


def escape(part: str) -> str:
    """A free-form key part that cannot contain the separator."""
    return part.replace("%", "%25").replace(":", "%3A")


def _tag_part(part: str) -> str:
    """A free-form part of a hash tag, which cannot end the tag either."""
    return escape(part).replace("{", "%7B").replace("}", "%7D")


QUEUE_TAG: Final = "q"
API_KEYS_TAG: Final = "apikeys"
MAX_PARTITIONS: Final = 256
IDEMPOTENCY_BUCKETS: Final = 4096  # hashes per app that hold its idempotency keys
MSGID_BUCKETS: Final = 4096  # hashes per app that hold its msgids


@functools.cache
def queue_tag(partition: int, partitions: int) -> str:
    """The hash tag of one partition of the queue: `q` for a queue of one (the names of
    before); else the first `q<p>.<i>` whose slot lies in the p-th of `partitions` equal
    shares of the slots. `q0`, `q1`, ... themselves bunch up (their CRC16s differ in few
    bits: four of them put three on one primary of three), while a cluster's primaries
    usually serve equal ranges of slots, so these spread as evenly as the ranges do."""
    if partitions == 1:
        return QUEUE_TAG
    share = REDIS_CLUSTER_HASH_SLOTS / partitions
    for i in range(1_000_000):
        tag = f"{QUEUE_TAG}{partition}.{i}"
        if int(key_slot(tag.encode()) // share) == partition:
            return tag
    raise RuntimeError(f"no hash tag found for partition {partition} of {partitions}")


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """The key shapes; `prefix` keeps one gateway's keys apart from anything else;
    `tagged` (on a Redis Cluster) puts the hash tags in."""

    prefix: str = "wxgate"
    tagged: bool = False
    partitions: int = 1  # the queue's partitions (a Redis Cluster only)
    partition: int = 0  # the partition whose queue keys these are (`at`)

    def __post_init__(self) -> None:
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError("a Redis key prefix cannot contain { or } (hash tags)")
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ValueError(f"a queue has 1 to {MAX_PARTITIONS} partitions")
        if self.partitions > 1 and not self.tagged:
            raise ValueError("partitions are for a Redis Cluster: one server has one queue")
        if not 0 <= self.partition < self.partitions:
            raise ValueError(f"no partition {self.partition} of {self.partitions}")

    @property
    def partitioned(self) -> bool:
        return self.partitions > 1

    def at(self, partition: int) -> RedisKeys:
        """The keys of queue partition `partition` (the keys outside the queue are the same)."""
        return replace(self, partition=partition)

    def partition_of(self, message_id: str) -> int:
        """The partition a message lives in: a pure function of its id, so that a record
        is found by its id alone (CRC-32 spreads ULIDs evenly)."""
        if self.partitions == 1:
            return 0
        return zlib.crc32(message_id.encode()) % self.partitions

    def queue_tag(self, partition: int) -> str:
        """The hash tag of queue partition `partition` (module `queue_tag`)."""
        return queue_tag(partition, self.partitions)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _tagged(self, tag: str, *parts: str) -> str:
        """A key in the slot of `tag` (its parts already escaped for a tag)."""
        return ":".join((self.prefix, "{" + tag + "}", *parts))

    def _q(self, *parts: str) -> str:
        """A key of this partition of the queue, which every message script touches."""
        if not self.tagged:
            return self._key(*parts)
        return self._tagged(self.queue_tag(self.partition), *parts)

    def _claim(self, *parts: str) -> str:
        """A dedupe key: in the queue, or in a slot of its own when the queue is
        partitioned (a message's partition is not known before its key is claimed)."""
        return self._key(*parts) if self.partitioned else self._q(*parts)

    def _app(self, kind: str, app: str, *parts: str) -> str:
        """A key in the slot of one app (its token, lock, fence, budget, ...)."""
        if self.tagged:
            return self._tagged("app=" + _tag_part(app), kind, *parts)
        return self._key(kind, escape(app), *parts)

    # -- records and their indexes ----------------------------------------------------

    def message(self, message_id: str) -> str:
        """Hash: one message record (fields as in `MessageRecord`, events as JSON lines),
        in its own partition whichever partition's keys these are."""
        if not self.tagged:
            return self._key("msg", escape(message_id))
        tag = self.queue_tag(self.partition_of(message_id))
        return self._tagged(tag, "msg", escape(message_id))

    @property
    def counts(self) -> str:
        """Hash: messages per status, every app."""
        return self._q("counts")

    def app_counts(self, app: str) -> str:
        """Hash: messages per status of one app."""
        return self._q("counts", escape(app))

    def batch(self, batch_id: str) -> str:
        """Hash: messages per status of one batch, `total` and `created_at`."""
        return self._q("batch", escape(batch_id))

    @property
    def write_probe(self) -> str:
        """String: written by the readiness check `storage_writable`, expiring by itself."""
        return self._key("write_probe")

    @property
    def index_all(self) -> str:
        """Sorted set, score 0, ULID members: every message. Written only by versions before
        list() merged the app indexes instead; purge still removes its members."""
        return self._q("idx", "all")

    def index_status(self, status: str) -> str:
        return self._q("idx", "status", escape(status))

    def index_app(self, app: str) -> str:
        return self._q("idx", "app", escape(app))

    def index_batch(self, batch_id: str) -> str:
        return self._q("idx", "batch", escape(batch_id))

    # -- the queue --------------------------------------------------------------------

    @property
    def apps(self) -> str:
        """Set: the apps that have a ready stream."""
        return self._q("apps")

    def ready(self, app: str) -> str:
        """Stream: one app's messages ready to lease (entry field `ref`), group GROUP."""
        return self._q("ready", escape(app))

    def retry(self, app: str) -> str:
        """Sorted set: one app's queued messages waiting for a time (score), member ref."""
        return self._q("retry", escape(app))

    @property
    def leases(self) -> str:
        """Sorted set: messages in `sending`, score the lease deadline, member ref."""
        return self._q("leases")

    @property
    def dead(self) -> str:
        """Sorted set: dead letters, score when they died, member ref."""
        return self._q("dead")

    @property
    def settled(self) -> str:
        """Sorted set: settled messages, score last update, member what purge needs."""
        return self._q("settled")

    # -- keyed lookups with a lifetime ------------------------------------------------

    def hooks(self, app: str) -> str:
        """Stream: the app's webhook outbox, one entry per move of a notify message into
        a settled status (message_id, status, at, errcode, errmsg, msgid), read by the
        HOOKS_GROUP consumer group."""
        return self._q("hooks", escape(app))

    # The webhook outbox once a dispatcher adopted its entries (redis_webhooks.py).
    def hook_events(self, app: str) -> str:
        """Hash: the app's undelivered (and dead) outbox events, stream id -> JSON."""
        return self._q("hookev", escape(app))

    def hook_chains(self, app: str) -> str:
        """Hash: message id -> its undelivered events' stream ids in order, space-separated;
        only the first is ever due (a message's events are posted in order)."""
        return self._q("hookchain", escape(app))

    def hook_due(self, app: str) -> str:
        """Sorted set: events that may be claimed, score the retry time or lease deadline."""
        return self._q("hookdue", escape(app))

    def hook_pending(self, app: str) -> str:
        """Sorted set: every undelivered, not dead event, score when it was written."""
        return self._q("hookpend", escape(app))

    def hook_dead(self, app: str) -> str:
        """Sorted set: dead events, score when they died."""
        return self._q("hookdead", escape(app))

    def recent_sends(self, app: str, touser: str) -> str:
        """Sorted set: messages to one recipient settled sent or unknown, by settle time;
        trimmed to base.RECENT_SENDS_S and expiring with it."""
        return self._q("recent", escape(app), escape(touser))

    def idempotency(self, app: str, key: str) -> str:
        """String: "<id>\\x1f<digest>" of the first message with this key."""
        return self._claim("idem", escape(app), escape(key))

    def idempotency_bucket(self, app: str, key: str) -> str:
        """Hash: idempotency key -> "<id>\\x1f<digest>", one of IDEMPOTENCY_BUCKETS of an
        app (one queue only: a partitioned queue claims `idempotency` keys). A field costs
        ~40 bytes while the hash stays a listpack (up to 128 fields: 524,288 keyed
        messages an app), a string key ~150 with its TTL; a field has no TTL, so purge
        removes it with its message."""
        bucket = zlib.crc32(key.encode()) % IDEMPOTENCY_BUCKETS
        return self._q("idemb", escape(app), str(bucket))

    def batch_position(self, batch_id: str, position: int) -> str:
        """String: like an idempotency key, for a keyed batch's member without a key of
        its own (a namespace of its own: no caller key can name it)."""
        return self._claim("bpos", escape(batch_id), str(position))

    def batch_digest(self, batch_id: str) -> str:
        """String: a keyed batch's digest, claimed before its members are stored (a
        partitioned queue only: one partition keeps it in the batch hash)."""
        return self._claim("bdigest", escape(batch_id))

    def msgid(self, app: str, msgid: int) -> str:
        """String: the id of the message WeChat answered `msgid` for, as versions before
        `msgid_bucket` stored it (read, and deleted by purge, until it expires)."""
        return self._q("msgid", escape(app), str(msgid))

    def msgid_bucket(self, app: str, msgid: int) -> str:
        """Hash: msgid -> the id of the message WeChat answered it for, one of MSGID_BUCKETS
        of an app (see `idempotency_bucket`); `msgid` keys hold those stored before."""
        return self._q("msgidb", escape(app), str(msgid % MSGID_BUCKETS))

    def pending_report(self, app: str, msgid: int) -> str:
        """String (JSON): a delivery report that came before its msgid was stored."""
        return self._q("report", escape(app), str(msgid))

    def nonce(self, app: str, nonce: str) -> str:
        return self._key("nonce", escape(app), escape(nonce))

    # -- shared worker state ----------------------------------------------------------

    @property
    def paused(self) -> str:
        """Set: apps that have (or had) a pause key."""
        return self._q("paused")

    def pause(self, app: str) -> str:
        """String (JSON): one app's pause; expires with a timed pause."""
        return self._q("pause", escape(app))

    def bucket(self, app: str) -> str:
        """Hash: one app's send budget (tokens, updated)."""
        return self._app("bucket", app)

    # -- the grant ledger of subscribe messages ---------------------------------------

    def grants(self, app: str, touser: str) -> str:
        """Hash: template_id -> "one_time long_term updated_at" of one user's grants."""
        return self._key("grants", escape(app), escape(touser))

    def pending_sent(self, app: str, touser: str, template_id: str) -> str:
        """List: "status text" of sent events that beat the worker's settle, oldest first;
        expiring with the newest one's deadline."""
        return self._key("pending_sent", escape(app), escape(touser), escape(template_id))

    # -- access tokens ----------------------------------------------------------------

    def token(self, app: str) -> str:
        """Hash: one app's cached access token."""
        return self._app("token", app)

    def token_lock(self, app: str) -> str:
        """String: the owner of one app's token fetch lock (expires with the lease)."""
        return self._app("token_lock", app)

    def token_fence(self, app: str) -> str:
        """Counter: the fencing number of one app's lock; only grows."""
        return self._app("token_fence", app)

    # -- the template registry and the suppression list --------------------------------

    def templates(self, app: str, kind: str) -> str:
        """Hash: template_id -> RegisteredTemplate JSON, the templates of one (app, kind)."""
        return self._app("tpl", app, escape(kind))

    def template_syncs(self, app: str) -> str:
        """Hash: kind -> TemplateSyncState JSON, how each kind's last sync went."""
        return self._app("tplsync", app)

    def suppressions(self, app: str, bucket: int) -> str:
        """Hash: openid -> "reason|errcode|since", one bucket of an app's suppression
        list (see redis_suppressions: small hashes stay in Redis's compact encoding)."""
        return self._app("supp", app, str(bucket))

    # -- per-recipient send caps and the dedupe window ---------------------------------

    def cap(self, app: str, touser: str, scope: str) -> str:
        """Sorted set: message ids holding a send slot of one recipient's limit, scored
        by when each slot frees (redis_caps.py)."""
        if self.tagged:
            tag = f"cap={_tag_part(app)}:{_tag_part(touser)}"
            return self._tagged(tag, "cap", escape(scope))
        return self._key("cap", escape(app), escape(touser), escape(scope))

    def dedupe(self, app: str, digest: str) -> str:
        """String: the first message id of a (recipient, template, data) in the app's
        dedupe window, expiring with the window (redis_dedupe.py)."""
        return self._key("dedupe", escape(app), escape(digest))

    # -- API keys and the audit log ------------------------------------------------------

    def api_key(self, key_id: str) -> str:
        """Hash: one stored API key (redis_api_keys.py); never the key, only its digest."""
        if self.tagged:
            return self._tagged(API_KEYS_TAG, "apikey", escape(key_id))
        return self._key("apikey", escape(key_id))

    @property
    def api_key_digests(self) -> str:
        """Hash: digest -> id of every live API key."""
        return (
            self._tagged(API_KEYS_TAG, "digests")
            if self.tagged
            else self._key("apikeys", "digests")
        )

    @property
    def api_key_ids(self) -> str:
        """Sorted set: every API key id, scored by creation time."""
        return self._tagged(API_KEYS_TAG, "ids") if self.tagged else self._key("apikeys", "ids")

    @property
    def audit(self) -> str:
        """Stream: the audit log of operator actions (redis_audit.py)."""
        return self._key("audit")
