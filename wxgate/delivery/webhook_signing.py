"""Status webhooks signed per the Standard Webhooks specification.

`webhook-id`, `webhook-timestamp` (whole seconds) and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the app's `whsec_` secret) are
made by the `standardwebhooks` library itself, so a receiver using it verifies what
we send unmodified. A secret is `whsec_` and the base64 of 32 random bytes.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from wxgate.config import WEBHOOK_SECRET_PREFIX

SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh webhook secret for `[apps.NAME] webhook_secret`."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class WebhookSigner:
    """Signs bodies with one app's secret; holds the key, never shows it."""

    __slots__ = ("_webhook",)

    def __init__(self, secret: SecretStr) -> None:
        self._webhook = Webhook(secret.get_secret_value())

    def __repr__(self) -> str:
        return "WebhookSigner(***)"

    def headers(self, webhook_id: str, timestamp: float, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers for `body` sent at `timestamp`."""
        at = datetime.fromtimestamp(timestamp, UTC)
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(timestamp)),
            "webhook-signature": self._webhook.sign(webhook_id, at, body),
        }
