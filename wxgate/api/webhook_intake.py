"""Intake's part in status webhooks: which messages notify, and which callback_url may be used.

A message notifies (its settled statuses go to the webhook outbox) when its app has
a `webhook_url` or the message names its own `callback_url`. A callback_url must be
http(s), carry no user name or password, and name a host on `[server]
webhook_allowed_hosts` (exact, or "*.example.com" for its subdomains), so a caller
cannot make the gateway post to an internal address; its app must have a
`webhook_secret` to sign with. Anything else is a 400 naming `callback_url`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import urlsplit

from wxgate.api.errors import InvalidRequest
from wxgate.backends.base import NewMessage
from wxgate.config import Settings


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """`host` is on the list: the same name, or under a "*.domain" entry."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def callback_url_problem(url: str, allowed: Sequence[str]) -> str | None:
    """Why `url` may not be a message's callback_url; None when it may."""
    try:
        parts = urlsplit(url)
        port = parts.port  # a port that is not a number raises here
    except ValueError:
        return "callback_url is not a valid URL"
    del port
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "callback_url must be an http(s) URL"
    if parts.username is not None or parts.password is not None:
        return "callback_url must not carry a user name or password"
    if not host_allowed(parts.hostname, allowed):
        return f"callback_url host {parts.hostname!r} is not on [server] webhook_allowed_hosts"
    return None


class WebhookNotify:
    """The IntakeCheck that marks messages to notify and checks their callback_url."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def check(self, app: str, messages: Sequence[NewMessage]) -> Sequence[NewMessage]:
        app_settings = self._settings.apps[app]
        allowed = self._settings.server.webhook_allowed_hosts
        app_notifies = app_settings.webhook_url is not None
        checked: list[NewMessage] = []
        for message in messages:
            if message.callback_url is not None:
                problem = callback_url_problem(message.callback_url, allowed)
                if problem is None and not app_settings.webhook_secret.get_secret_value():
                    problem = f"app {app!r} has no webhook_secret to sign callbacks with"
                if problem is not None:
                    raise InvalidRequest.at(["body", "callback_url"], problem)
            if app_notifies or message.callback_url is not None:
                message = replace(message, notify=True)
            checked.append(message)
        return checked
