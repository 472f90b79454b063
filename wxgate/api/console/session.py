"""The console's sign-in session: a cookie signed with a server secret, holding no key.

A session names the API key it was opened with only by a tag (an HMAC of the key's
configured hash), so the cookie gives away nothing of the key, and taking a key out of
`server.api_keys` ends its sessions at the next request. Every process that shares
the config derives the same signing secret, so a session opened on one API process
is honoured by the others behind the same load balancer. The session also carries
the CSRF token every console form must send back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from wxgate.config import Settings

SESSION_COOKIE = "wxgate_console"
SIGN_IN_COOKIE = "wxgate_console_sign_in"  # the sign-in form's CSRF token, before a session
SESSION_TTL_S = 8 * 3600
SIGN_IN_TTL_S = 900
OPEN_TAG = "open"  # the tag of a session on a gateway with no API keys configured
_SECRET_LABEL = b"wxgate console session v1"


def derive_secret(settings: Settings) -> bytes:
    """`server.console_secret` when set; otherwise a key derived from the secrets every
    process of this deployment already shares (AppSecrets, callback tokens, AES keys and
    the API key hashes); a random one (sessions then stay in this process) when there
    are none."""
    configured = settings.server.console_secret.get_secret_value()
    if configured:
        return hashlib.sha256(_SECRET_LABEL + configured.encode()).digest()
    material = [hash_ for hash_ in settings.server.api_keys]
    for name in sorted(settings.apps):
        app = settings.apps[name]
        for secret in (app.secret, app.callback_token, app.encoding_aes_key):
            material.append(secret.get_secret_value())
    shared = "\n".join(material)
    if not shared.strip():
        return secrets.token_bytes(32)
    return hmac.new(_SECRET_LABEL, shared.encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    key_tag: str
    csrf: str
    expires_at: float


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Signs and checks session and sign-in cookies with one server secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def key_tag(self, key_hash: str) -> str:
        """What a session keeps of its key: not the key, not even its configured hash."""
        return hmac.new(self._secret, b"key:" + key_hash.encode(), hashlib.sha256).hexdigest()[:32]

    def _sign(self, purpose: str, body: bytes) -> str:
        mac = hmac.new(self._secret, purpose.encode() + b"\0" + body, hashlib.sha256).digest()
        return f"{_b64(body)}.{_b64(mac)}"

    def _open(self, purpose: str, cookie: str | None) -> bytes | None:
        if not cookie or cookie.count(".") != 1:
            return None
        body_text, mac_text = cookie.split(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except ValueError:
            return None
        expected = hmac.new(self._secret, purpose.encode() + b"\0" + body, hashlib.sha256).digest()
        return body if hmac.compare_digest(mac, expected) else None

    def issue(self, key_tag: str, now: float) -> tuple[Session, str]:
        session = Session(key_tag, secrets.token_urlsafe(24), now + SESSION_TTL_S)
        body = orjson.dumps({"k": session.key_tag, "c": session.csrf, "e": session.expires_at})
        return session, self._sign("session", body)

    def session(self, cookie: str | None, now: float, valid_tags: Iterable[str]) -> Session | None:
        """The session in `cookie` if it is signed, unexpired, and its key still configured."""
        body = self._open("session", cookie)
        if body is None:
            return None
        try:
            fields = orjson.loads(body)
            session = Session(str(fields["k"]), str(fields["c"]), float(fields["e"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if session.expires_at <= now or session.key_tag not in set(valid_tags):
            return None
        return session

    def sign_in_token(self, now: float) -> tuple[str, str]:
        """A CSRF token for the sign-in form, and the cookie that vouches for it."""
        token = secrets.token_urlsafe(24)
        body = orjson.dumps({"c": token, "e": now + SIGN_IN_TTL_S})
        return token, self._sign("sign-in", body)

    def sign_in_token_matches(self, cookie: str | None, presented: str, now: float) -> bool:
        body = self._open("sign-in", cookie)
        if body is None:
            return False
        try:
            fields = orjson.loads(body)
            token, expires_at = str(fields["c"]), float(fields["e"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return False
        return expires_at > now and csrf_matches(token, presented)


def csrf_matches(expected: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())
