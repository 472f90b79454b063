"""WeChat's callback protocol (docs/wechat-protocol.md §5): signatures, the AES envelope and events.

This module owns the way from the bytes WeChat POSTs to our callback URL to a typed
event, and the way back that the sandbox uses to send callbacks. It does no I/O and
reads no clock: timestamp freshness and nonce replay belong to the caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeElementTree
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml import DefusedXmlException

from wxgate.wechat.errors import (
    CallbackAppIdError,
    CallbackDecryptError,
    CallbackMalformedError,
    CallbackSignatureError,
)

ENCRYPT_TYPE_AES = "aes"
ENCRYPT_TYPE_RAW = "raw"  # what WeChat calls plaintext mode; an absent encrypt_type means the same

EVENT_TEMPLATE_FINISH = "TEMPLATESENDJOBFINISH"
EVENT_SUBSCRIBE_POPUP = "subscribe_msg_popup_event"
EVENT_SUBSCRIBE_CHANGE = "subscribe_msg_change_event"
EVENT_SUBSCRIBE_SENT = "subscribe_msg_sent_event"

_AES_KEY_BYTES = 32
_AES_BLOCK = 16
_PAD_BLOCK = 32  # WeChat pads to 32 bytes, twice the AES block (§5.3)
_RANDOM_BYTES = 16
_HEADER_BYTES = _RANDOM_BYTES + 4  # the random prefix, then the message length big-endian

# Twenty digits hold any int64 or uint64 msgid, and bound the work int() is asked to do.
_INTEGER = re.compile(r"-?[0-9]{1,20}")


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
        key = _aes_key(encoding_aes_key)
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


def _aes_key(encoding_aes_key: str) -> bytes:
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except ValueError:
        raise ValueError(
            f"EncodingAESKey is not base64 ({len(encoding_aes_key)} characters; 43 expected)"
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


# ---------------------------------------------------------------------------
# Events (§5.5)


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """What every event pushed by WeChat starts with."""

    to_user: str  # the account's original id, gh_...
    from_user: str  # the openid of the user concerned
    create_time: int  # epoch seconds


@dataclass(frozen=True, slots=True)
class TemplateSendJobFinish(CallbackEvent):
    """TEMPLATESENDJOBFINISH: WeChat's final word on one template message."""

    msgid: int  # the msgid template/send answered; exact even above 2**53
    status: str  # kept raw: "success", "failed:user block", "failed: system failed", ...

    @property
    def succeeded(self) -> bool:
        return self.status == "success"

    @property
    def failed(self) -> bool:
        return self.status.startswith("failed")


@dataclass(frozen=True, slots=True)
class SubscribePopupItem:
    """One template in a subscribe pop-up the user answered."""

    template_id: str
    status: str  # "accept" or "reject", raw
    popup_scene: int

    @property
    def accepted(self) -> bool:
        return self.status == "accept"


@dataclass(frozen=True, slots=True)
class SubscribeChangeItem:
    """One template whose subscription the user changed in the settings."""

    template_id: str
    status: str  # "accept" or "reject" (unsubscribed), raw

    @property
    def accepted(self) -> bool:
        return self.status == "accept"


@dataclass(frozen=True, slots=True)
class SubscribeSentItem:
    """The delivery result of one subscription notification."""

    template_id: str
    msgid: int
    error_code: int
    error_status: str  # "success" when error_code is 0

    @property
    def succeeded(self) -> bool:
        return self.error_code == 0


@dataclass(frozen=True, slots=True)
class SubscribeMsgPopupEvent(CallbackEvent):
    """subscribe_msg_popup_event: the user answered a subscribe pop-up."""

    items: tuple[SubscribePopupItem, ...]


@dataclass(frozen=True, slots=True)
class SubscribeMsgChangeEvent(CallbackEvent):
    """subscribe_msg_change_event: the user changed subscriptions in the settings."""

    items: tuple[SubscribeChangeItem, ...]


@dataclass(frozen=True, slots=True)
class SubscribeMsgSentEvent(CallbackEvent):
    """subscribe_msg_sent_event: delivery results of subscription notifications."""

    items: tuple[SubscribeSentItem, ...]


@dataclass(frozen=True, slots=True)
class OtherMessage:
    """Anything else WeChat pushes (user messages, follow events, ...): acknowledged, not used."""

    msg_type: str
    event: str  # "" when the message is not an event
    fields: dict[str, str] = field(hash=False)  # every top-level element's text


CallbackMessage: TypeAlias = (
    TemplateSendJobFinish
    | SubscribeMsgPopupEvent
    | SubscribeMsgChangeEvent
    | SubscribeMsgSentEvent
    | OtherMessage
)


def parse_message(xml: bytes) -> CallbackMessage:
    """The message in a plaintext callback document; CallbackMalformedError names what is wrong."""
    root = _parse_xml(xml)
    msg_type = _text(root, "MsgType")
    event = root.findtext("Event") or ""
    parse_event = _EVENT_PARSERS.get(event.lower()) if msg_type.lower() == "event" else None
    if parse_event is None:
        return OtherMessage(msg_type, event, {child.tag: child.text or "" for child in root})
    return parse_event(root)


def template_finish_xml(
    to_user: str, from_user: str, create_time: int, msgid: int, status: str
) -> str:
    """The TEMPLATESENDJOBFINISH document WeChat sends, byte for byte as in §5.3."""
    return (
        f"<xml><ToUserName>{_cdata(to_user)}</ToUserName>"
        f"<FromUserName>{_cdata(from_user)}</FromUserName>"
        f"<CreateTime>{int(create_time)}</CreateTime>"
        f"<MsgType>{_cdata('event')}</MsgType>"
        f"<Event>{_cdata(EVENT_TEMPLATE_FINISH)}</Event>"
        f"<MsgID>{int(msgid)}</MsgID>"
        f"<Status>{_cdata(status)}</Status></xml>"
    )


def _cdata(text: str) -> str:
    # "]]>" would end the section early, so it is split across two sections.
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _parse_xml(document: bytes) -> Element:
    try:
        return SafeElementTree.fromstring(document, forbid_dtd=True)
    except DefusedXmlException:
        raise CallbackMalformedError(
            "the XML declares a DTD or entities, which are refused"
        ) from None
    except (ParseError, LookupError, ValueError):  # LookupError: an unknown declared encoding
        raise CallbackMalformedError("the body is not well-formed XML") from None


def _field_error(name: str, problem: str) -> CallbackMalformedError:
    return CallbackMalformedError(f"{name} {problem}", reason="field")


def _text(node: Element, tag: str, where: str = "") -> str:
    text = node.findtext(tag)
    if not text:
        raise _field_error(where + tag, "is missing or empty")
    return text


def _integer(node: Element, tag: str, where: str = "") -> int:
    text = _text(node, tag, where).strip()
    if not _INTEGER.fullmatch(text):
        raise _field_error(where + tag, "is not an integer")
    return int(text)


def _header(root: Element) -> tuple[str, str, int]:
    return _text(root, "ToUserName"), _text(root, "FromUserName"), _integer(root, "CreateTime")


def _list_items(root: Element, container: str) -> list[Element]:
    # XML has no arrays: one <List> or several, each an item; both become a tuple.
    holder = root.find(container)
    items = [] if holder is None else holder.findall("List")
    if not items:
        raise _field_error(f"{container}.List", "is missing")
    return items


def _template_finish(root: Element) -> TemplateSendJobFinish:
    return TemplateSendJobFinish(
        *_header(root), msgid=_integer(root, "MsgID"), status=_text(root, "Status")
    )


def _subscribe_popup(root: Element) -> SubscribeMsgPopupEvent:
    where = "SubscribeMsgPopupEvent.List."
    items = tuple(
        SubscribePopupItem(
            template_id=_text(item, "TemplateId", where),
            status=_text(item, "SubscribeStatusString", where),
            popup_scene=_integer(item, "PopupScene", where),
        )
        for item in _list_items(root, "SubscribeMsgPopupEvent")
    )
    return SubscribeMsgPopupEvent(*_header(root), items=items)


def _subscribe_change(root: Element) -> SubscribeMsgChangeEvent:
    where = "SubscribeMsgChangeEvent.List."
    items = tuple(
        SubscribeChangeItem(
            template_id=_text(item, "TemplateId", where),
            status=_text(item, "SubscribeStatusString", where),
        )
        for item in _list_items(root, "SubscribeMsgChangeEvent")
    )
    return SubscribeMsgChangeEvent(*_header(root), items=items)


def _subscribe_sent(root: Element) -> SubscribeMsgSentEvent:
    where = "SubscribeMsgSentEvent.List."
    items = tuple(
        SubscribeSentItem(
            template_id=_text(item, "TemplateId", where),
            msgid=_integer(item, "MsgID", where),
            error_code=_integer(item, "ErrorCode", where),
            error_status=_text(item, "ErrorStatus", where),
        )
        for item in _list_items(root, "SubscribeMsgSentEvent")
    )
    return SubscribeMsgSentEvent(*_header(root), items=items)


# Keyed in lower case: WeChat spells TEMPLATESENDJOBFINISH in capitals, the others not.
_EVENT_PARSERS: dict[str, Callable[[Element], CallbackMessage]] = {
    EVENT_TEMPLATE_FINISH.lower(): _template_finish,
    EVENT_SUBSCRIBE_POPUP: _subscribe_popup,
    EVENT_SUBSCRIBE_CHANGE: _subscribe_change,
    EVENT_SUBSCRIBE_SENT: _subscribe_sent,
}


def callback_timestamp(query: Mapping[str, str]) -> int:
    """The `timestamp` of a callback query in epoch seconds, for the caller's freshness check."""
    text = query.get("timestamp") or ""
    if not _INTEGER.fullmatch(text):
        raise _field_error("timestamp", "is not an integer")
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
            raise _field_error("echostr", "is missing or empty")
        return echostr

    def open(self, query: Mapping[str, str], body: bytes) -> CallbackMessage:
        """The message in a POSTed callback, after every check §5.2 and §5.3 ask for."""
        self._check_signature(query)
        encrypt_type = query.get("encrypt_type") or ENCRYPT_TYPE_RAW
        if encrypt_type == ENCRYPT_TYPE_AES:
            return parse_message(self._unseal(query, body))
        if encrypt_type != ENCRYPT_TYPE_RAW:
            raise _field_error("encrypt_type", "is neither aes nor raw")
        if self._require_encryption:
            raise CallbackDecryptError(
                "a plaintext callback arrived but this app requires safe mode",
                reason="encryption_required",
            )
        return parse_message(body)

    def seal(
        self,
        xml: str,
        timestamp: str,
        nonce: str,
        openid: str | None = None,
        encrypt: bool | None = None,
        random16: bytes | None = None,
        *,
        compatible: bool = False,
    ) -> tuple[dict[str, str], bytes]:
        """The query and body WeChat would POST for `xml`: plaintext, or safe mode when
        `encrypt` (default: iff a key is set); `compatible` keeps the plaintext beside."""
        signature = sign(self._token, timestamp, nonce)
        query = {"signature": signature, "timestamp": timestamp, "nonce": nonce}
        if openid is not None:
            query["openid"] = openid
        sealing = self._envelope is not None if encrypt is None else encrypt
        if not sealing:
            if compatible:
                raise ValueError("compatible mode is a form of encryption, but encrypt is False")
            return query, xml.encode("utf-8")
        if self._envelope is None:
            raise ValueError("cannot encrypt: no EncodingAESKey is configured")
        ciphertext = self._envelope.encrypt(xml, random16)
        query["encrypt_type"] = ENCRYPT_TYPE_AES
        query["msg_signature"] = sign(self._token, timestamp, nonce, ciphertext)
        return query, _sealed_document(xml, ciphertext, compatible).encode("utf-8")

    def _check_signature(self, query: Mapping[str, str]) -> None:
        timestamp, nonce = query.get("timestamp"), query.get("nonce")
        if not verify_signature(self._token, timestamp, nonce, query.get("signature")):
            raise CallbackSignatureError("signature does not match the callback token")

    def _unseal(self, query: Mapping[str, str], body: bytes) -> bytes:
        if self._envelope is None:
            raise CallbackDecryptError("an encrypted callback arrived but no key is configured")
        # In compatible mode the plaintext fields sit beside <Encrypt>; only the sealed
        # copy is signed, so only it is believed.
        encrypt = _text(_parse_xml(body), "Encrypt")
        timestamp, nonce = query.get("timestamp"), query.get("nonce")
        signature = query.get("msg_signature")
        if not verify_msg_signature(self._token, timestamp, nonce, encrypt, signature):
            raise CallbackSignatureError(
                "msg_signature does not match the callback token", reason="msg_signature"
            )
        return self._envelope.decrypt(encrypt)


def _sealed_document(xml: str, ciphertext: str, compatible: bool) -> str:
    encrypt = f"<Encrypt>{_cdata(ciphertext)}</Encrypt>"
    if compatible:
        head, closing, _ = xml.rstrip().rpartition("</xml>")
        if not closing:
            raise ValueError("compatible mode needs a document that ends with </xml>")
        return f"{head}{encrypt}</xml>"
    to_user = _parse_xml(xml.encode("utf-8")).findtext("ToUserName") or ""
    return f"<xml><ToUserName>{_cdata(to_user)}</ToUserName>{encrypt}</xml>"
