"""How the terminal shows a message's status: one colour per status, for the CLI's
tables and the demo's live table alike."""

from __future__ import annotations

from wxgate.backends.base import Status

STATUS_STYLE: dict[Status, str] = {
    Status.SCHEDULED: "dim",
    Status.QUEUED: "white",
    Status.SENDING: "blue",
    Status.SENT: "cyan",
    Status.DELIVERED: "green",
    Status.REJECTED: "yellow",
    Status.FAILED: "red",
    Status.DEAD: "bold red",
    Status.UNKNOWN: "magenta",
    Status.CANCELLED: "dim",
    Status.SUPPRESSED: "yellow",
    Status.THROTTLED: "yellow",
}
