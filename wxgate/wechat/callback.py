"""WeChat's callback protocol (docs/wechat-protocol.md §5): signatures, the AES
envelope, and the way from the bytes WeChat POSTs to a typed event.

This module owns signing and opening what reaches our callback URL (and sealing the
same, for the sandbox); the events themselves live in callback_events.py, whose
public names are re-exported here. It does no I/O and reads no clock: timestamp
freshness and nonce replay belong to the caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping

import orjson
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wxgate.wechat.callback_events import (
    EVENT_FOLLOW,
    EVENT_SUBSCRIBE_CHANGE,
    EVENT_SUBSCRIBE_POPUP,
    EVENT_SUBSCRIBE_SENT,
    EVENT_TEMPLATE_FINISH,
    EVENT_UNFOLLOW,
    INTEGER,
    CallbackEvent,
    CallbackMessage,
    FollowEvent,
    OtherMessage,
    SubscribeChangeEvent,
    SubscribeChangeItem,
    SubscribePopupEvent,
    SubscribePopupItem,
    SubscribeSentEvent,
    SubscribeSentItem,
    TemplateSendJobFinish,
    cdata,
    event_json,
    event_xml,
    field_error,
    is_json,
    parse_message,
    parse_xml,
    read_json,
    template_finish_xml,
)
from wxgate.wechat.errors import (
    CallbackAppIdError,
    CallbackDecryptError,
    CallbackMalformedError,
    CallbackSignatureError,
    HostileDocument,
    UnparseableEvent,
)

__all__ = [
    "ENCRYPT_TYPE_AES",
    "ENCRYPT_TYPE_RAW",
    "EVENT_FOLLOW",
    "EVENT_SUBSCRIBE_CHANGE",
    "EVENT_SUBSCRIBE_POPUP",
    "EVENT_SUBSCRIBE_SENT",
    "EVENT_TEMPLATE_FINISH",
    "EVENT_UNFOLLOW",
    "CallbackCodec",
    "CallbackEvent",
    "CallbackMessage",
    "Envelope",
    "FollowEvent",
    "OtherMessage",
    "SubscribeChangeEvent",
    "SubscribeChangeItem",
    "SubscribePopupEvent",
    "SubscribePopupItem",
    "SubscribeSentEvent",
    "SubscribeSentItem",
    "TemplateSendJobFinish",
    "aes_key",
    "callback_timestamp",
    "event_json",
    "event_xml",
    "parse_message",
    "sign",
    "template_finish_xml",
    "verify_msg_signature",
    "verify_signature",
]

ENCRYPT_TYPE_AES = "aes"
ENCRYPT_TYPE_RAW = "raw"  # what WeChat calls plaintext mode; an absent encrypt_type means the same

_AES_KEY_BYTES = 32
_AES_BLOCK = 16
_PAD_BLOCK = 32  # WeChat pads to 32 bytes, twice the AES block (§5.3)
_RANDOM_BYTES = 16
_HEADER_BYTES = _RANDOM_BYTES + 4  # the random prefix, then the message length big-endian


# ---------------------------------------------------------------------------
# Signatures (§5.1, §5.2)


def sign(token: str, *parts: str) -> str:
    """WeChat's signature: lower-hex SHA-1 of the sorted, concatenated token and parts."""
    joined = "".join(sorted((token, *parts))).encode("utf-8", "surrogatepass")
    # SHA-1 is fixed by WeChat's protocol; what we add is comparing it in constant time.
    return hashlib.sha1(joined).hexdigest()  # noqa: S324


def verify_signature(
    token: str, timestamp: str | None, nonce: str | None, signature: str | None
) -> bool:
    """Whether `signature` signs (timestamp, nonce) with `token`; False for any odd input."""
    return _signs(token, (timestamp, nonce), signature)


def verify_msg_signature(
    token: str,
    timestamp: str | None,
    nonce: str | None,
    encrypt: str | None,
    msg_signature: str | None,
) -> bool:
    """Whether `msg_signature` signs (timestamp, nonce, Encrypt) with `token`; never raises."""
    return _signs(token, (timestamp, nonce, encrypt), msg_signature)


def _signs(token: str, parts: tuple[str | None, ...], given: str | None) -> bool:
    # An empty token means the app has none configured: nothing can be signed with it.
    if not (isinstance(token, str) and token and isinstance(given, str)):
        return False
    texts = [part for part in parts if isinstance(part, str) and part]
    if len(texts) != len(parts):
        return False
    expected = sign(token, *texts).encode("ascii")
    return hmac.compare_digest(expected, given.encode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------------------
# The AES envelope of safe mode (§5.3)


class Envelope:
    """AES-256-CBC safe mode for one appid: seals and opens the value of <Encrypt>."""

    __slots__ = ("_appid", "_cipher")

    def __init__(self, encoding_aes_key: str, appid: str) -> None:
        key = aes_key(encoding_aes_key)
        self._appid = appid.encode("utf-8")
        self._cipher = Cipher(algorithms.AES(key), modes.CBC(key[:_AES_BLOCK]))

    def __repr__(self) -> str:
        return f"Envelope(appid={self._appid.decode('utf-8')!r})"

    def encrypt(self, xml: bytes | str, random16: bytes | None = None) -> str:
        """The base64 <Encrypt> value of `xml`; `random16` fixes the prefix for test vectors."""
        message = xml.encode("utf-8") if isinstance(xml, str) else xml
        prefix = secrets.token_bytes(_RANDOM_BYTES) if random16 is None else random16
        if len(prefix) != _RANDOM_BYTES:
            raise ValueError(f"random16 must be {_RANDOM_BYTES} bytes, got {len(prefix)}")
        plain = prefix + len(message).to_bytes(4, "big") + message + self._appid
        encryptor = self._cipher.encryptor()
        sealed = encryptor.update(_pad(plain)) + encryptor.finalize()
        return base64.b64encode(sealed).decode("ascii")

    def decrypt(self, encrypt_b64: str) -> bytes:
        """The XML inside an <Encrypt> value; CallbackRejected for anything else."""
        decryptor = self._cipher.decryptor()
        plain = _unpad(decryptor.update(_ciphertext(encrypt_b64)) + decryptor.finalize())
        if len(plain) < _HEADER_BYTES:
            raise CallbackDecryptError("the plaintext is shorter than its header")
        end = _HEADER_BYTES + int.from_bytes(plain[_RANDOM_BYTES:_HEADER_BYTES], "big")
        if end > len(plain):
            raise CallbackDecryptError("the declared message length runs past the plaintext")
        if plain[end:] != self._appid:
            raise CallbackAppIdError(
                f"the envelope was sealed for an appid other than {self._appid.decode('utf-8')}"
            )
        return plain[_HEADER_BYTES:end]


def aes_key(encoding_aes_key: str) -> bytes:
    """The AES key an EncodingAESKey stands for: its 43 characters are base64 that,
    with one `=` appended, decode to 32 bytes (§5.3). ValueError saying what is wrong,
    never the key itself."""
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except ValueError:
        raise ValueError(
            "EncodingAESKey is not base64: 43 characters of A-Z, a-z, 0-9, + and / expected "
            "(copy it again from the console)"
        ) from None
    if len(key) != _AES_KEY_BYTES:
        raise ValueError(
            f"EncodingAESKey decodes to {len(key)} bytes, not {_AES_KEY_BYTES} "
            f"({len(encoding_aes_key)} characters; 43 expected)"
        )
    return key


def _ciphertext(encrypt_b64: str) -> bytes:
    try:
        sealed = base64.b64decode(encrypt_b64, validate=True)
    except ValueError:  # binascii.Error, or text that is not ASCII
        raise CallbackDecryptError("Encrypt is not base64") from None
    if not sealed or len(sealed) % _AES_BLOCK:
        raise CallbackDecryptError("the ciphertext is not a whole number of AES blocks")
    return sealed


def _pad(plain: bytes) -> bytes:
    size = _PAD_BLOCK - len(plain) % _PAD_BLOCK
    return plain + bytes((size,)) * size


def _unpad(plain: bytes) -> bytes:
    size = plain[-1]
    if not 1 <= size <= _PAD_BLOCK or plain[-size:] != bytes((size,)) * size:
        raise CallbackDecryptError("the PKCS#7 padding is invalid")
    return plain[:-size]


def callback_timestamp(query: Mapping[str, str]) -> int:
    """The `timestamp` of a callback query in epoch seconds, for the caller's freshness check."""
    text = query.get("timestamp") or ""
    if not INTEGER.fullmatch(text):
        raise field_error("timestamp", "is not an integer")
    return int(text)


# ---------------------------------------------------------------------------
# The codec: one app's callback URL, in both directions


class CallbackCodec:
    """Checks and opens what WeChat sends to one app's callback URL, and seals the same."""

    __slots__ = ("_appid", "_envelope", "_require_encryption", "_token")

    def __init__(
        self,
        token: str,
        appid: str,
        encoding_aes_key: str = "",
        require_encryption: bool | None = None,
    ) -> None:
        self._token = token
        self._appid = appid
        self._envelope = Envelope(encoding_aes_key, appid) if encoding_aes_key else None
        if require_encryption is None:
            require_encryption = self._envelope is not None
        if require_encryption and self._envelope is None:
            raise ValueError("encryption is required but no EncodingAESKey is configured")
        self._require_encryption = require_encryption

    def __repr__(self) -> str:
        return (
            f"CallbackCodec(appid={self._appid!r}, encrypted={self._envelope is not None}, "
            f"require_encryption={self._require_encryption})"
        )

    @property
    def appid(self) -> str:
        return self._appid

    @property
    def require_encryption(self) -> bool:
        return self._require_encryption

    def verify_echo(self, query: Mapping[str, str]) -> str:
        """The `echostr` to answer WeChat's GET check with, once its signature holds."""
        self._check_signature(query)
        echostr = query.get("echostr")
        if not echostr:
            raise field_error("echostr", "is missing or empty")
        return echostr

    def open(self, query: Mapping[str, str], body: bytes) -> CallbackMessage:
        """The message in a POSTed callback, XML or JSON, after every check §5.2 and §5.3
        ask for. A document that passed them but cannot be read is UnparseableEvent."""
        self._check_signature(query)
        encrypt_type = query.get("encrypt_type") or ENCRYPT_TYPE_RAW
        if encrypt_type == ENCRYPT_TYPE_AES:
            return _parse_signed(self._unseal(query, body))
        if encrypt_type != ENCRYPT_TYPE_RAW:
            raise field_error("encrypt_type", "is neither aes nor raw")
        if self._require_encryption:
            raise CallbackDecryptError(
                "a plaintext callback arrived but this app requires safe mode",
                reason="encryption_required",
            )
        return _parse_signed(body)

    def seal(
        self,
        document: str,
        timestamp: str,
        nonce: str,
        openid: str | None = None,
        encrypt: bool | None = None,
        random16: bytes | None = None,
        *,
        compatible: bool = False,
    ) -> tuple[dict[str, str], bytes]:
        """The query and body WeChat would POST for `document` (XML, or a mini program's
        JSON): plaintext, or safe mode when `encrypt` (default: iff a key is set);
        `compatible` keeps the plaintext beside."""
        signature = sign(self._token, timestamp, nonce)
        query = {"signature": signature, "timestamp": timestamp, "nonce": nonce}
        if openid is not None:
            query["openid"] = openid
        sealing = self._envelope is not None if encrypt is None else encrypt
        if not sealing:
            if compatible:
                raise ValueError("compatible mode is a form of encryption, but encrypt is False")
            return query, document.encode("utf-8")
        if self._envelope is None:
            raise ValueError("cannot encrypt: no EncodingAESKey is configured")
        ciphertext = self._envelope.encrypt(document, random16)
        query["encrypt_type"] = ENCRYPT_TYPE_AES
        query["msg_signature"] = sign(self._token, timestamp, nonce, ciphertext)
        return query, _sealed_document(document, ciphertext, compatible).encode("utf-8")

    def _check_signature(self, query: Mapping[str, str]) -> None:
        timestamp, nonce = query.get("timestamp"), query.get("nonce")
        if not verify_signature(self._token, timestamp, nonce, query.get("signature")):
            raise CallbackSignatureError("signature does not match the callback token")

    def _unseal(self, query: Mapping[str, str], body: bytes) -> bytes:
        if self._envelope is None:
            raise CallbackDecryptError("an encrypted callback arrived but no key is configured")
        # In compatible mode the plaintext fields sit beside <Encrypt>; only the sealed
        # copy is signed, so only it is believed.
        encrypt = _encrypt_of(body)
        timestamp, nonce = query.get("timestamp"), query.get("nonce")
        signature = query.get("msg_signature")
        if not verify_msg_signature(self._token, timestamp, nonce, encrypt, signature):
            raise CallbackSignatureError(
                "msg_signature does not match the callback token", reason="msg_signature"
            )
        return self._envelope.decrypt(encrypt)


def _parse_signed(document: bytes) -> CallbackMessage:
    """The event of a document whose signature held: WeChat sent it, so what cannot be
    read is UnparseableEvent (answered `success`), not a refusal WeChat would retry."""
    try:
        return parse_message(document)
    except HostileDocument:
        raise
    except CallbackMalformedError as error:
        raise UnparseableEvent(error.detail) from None


def _encrypt_of(body: bytes) -> str:
    """The Encrypt value of a safe-mode body, XML or JSON."""
    if is_json(body):
        encrypt = read_json(body)[0].get("Encrypt")
    else:
        encrypt = parse_xml(body).findtext("Encrypt")
    if not encrypt:
        raise field_error("Encrypt", "is missing or empty")
    return encrypt


def _sealed_document(document: str, ciphertext: str, compatible: bool) -> str:
    if is_json(document.encode("utf-8")):
        fields = orjson.loads(document)
        sealed = fields if compatible else {"ToUserName": fields.get("ToUserName", "")}
        return orjson.dumps({**sealed, "Encrypt": ciphertext}).decode("utf-8")
    encrypt = f"<Encrypt>{cdata(ciphertext)}</Encrypt>"
    if compatible:
        head, closing, _ = document.rstrip().rpartition("</xml>")
        if not closing:
            raise ValueError("compatible mode needs a document that ends with </xml>")
        return f"{head}{encrypt}</xml>"
    to_user = parse_xml(document.encode("utf-8")).findtext("ToUserName") or ""
    return f"<xml><ToUserName>{cdata(to_user)}</ToUserName>{encrypt}</xml>"
