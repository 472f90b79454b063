"""One message's log lines, bound to its trace_id, message_id and app."""

from __future__ import annotations

import logging

import structlog

from wxgate.backends.base import MessageRecord
from wxgate.observability import get_logger

_log = get_logger("wxgate.delivery.worker")
_stdlib_log = logging.getLogger("wxgate.delivery.worker")


class MessageLog:
    """Bound on the first line, and a debug line is dropped before structlog sees it
    unless DEBUG is on: the happy path writes only a debug line, and binding plus
    rendering it cost ~17 us of the worker's ~215 us of main-thread CPU per message
    (measured); a level check costs 0.4 us."""

    __slots__ = ("_bound", "_record")

    def __init__(self, record: MessageRecord) -> None:
        self._record = record
        self._bound: structlog.stdlib.BoundLogger | None = None

    def _logger(self) -> structlog.stdlib.BoundLogger:
        if self._bound is None:
            record = self._record
            self._bound = _log.bind(trace_id=record.trace_id, message_id=record.id, app=record.app)
        return self._bound

    @staticmethod
    def debug_enabled() -> bool:
        """Whether a debug line would be written (so a caller can skip building one)."""
        return _stdlib_log.isEnabledFor(logging.DEBUG)

    def debug(self, event: str, **fields: object) -> None:
        if _stdlib_log.isEnabledFor(logging.DEBUG):
            self._logger().debug(event, **fields)

    def info(self, event: str, **fields: object) -> None:
        self._logger().info(event, **fields)

    def warning(self, event: str, **fields: object) -> None:
        self._logger().warning(event, **fields)

    def error(self, event: str, **fields: object) -> None:
        self._logger().error(event, **fields)
