"""The callback codec against docs/wechat-protocol.md §5, byte for byte: signatures, the AES
envelope, safe XML parsing, typed events, and every way a request is refused."""

from __future__ import annotations

import base64
import contextlib

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from wxgate.wechat.callback import (
    CallbackCodec,
    Envelope,
    FollowEvent,
    OtherMessage,
    SubscribeChangeEvent,
    SubscribePopupEvent,
    SubscribeSentEvent,
    TemplateSendJobFinish,
    callback_timestamp,
    parse_message,
    sign,
    template_finish_xml,
    verify_msg_signature,
    verify_signature,
)
from wxgate.wechat.errors import (
    CallbackAppIdError,
    CallbackDecryptError,
    CallbackMalformedError,
    CallbackRejected,
    CallbackSignatureError,
    HostileDocument,
)
from wxgate.wechat.report import ReportOutcome

# The vectors of §5.1 and §5.3.
TOKEN = "AAAAA"
TIMESTAMP = "1714037059"
NONCE = "486452656"
SIGNATURE = "899cf89e464efb63f54ddac96b0a0a235f53aa78"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx0000000000000001"
RANDOM16 = b"0123456789abcdef"
MSG = (
    "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>"
    "<FromUserName><![CDATA[oUSER_OPENID]]></FromUserName>"
    "<CreateTime>1714037059</CreateTime><MsgType><![CDATA[event]]></MsgType>"
    "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836</MsgID>"
    "<Status><![CDATA[success]]></Status></xml>"
)
ENCRYPT_PREFIX = "Q3stYC6hdFzMh9T8HCvyDAR8/sDLgG4XO1B1AO/T0At/297GZnIKl/FczD3l"
MSG_SIGNATURE = "d188f06f25498e100b1b92c7f9314f3d56e348af"

XXE = (
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>'
    b"<xml><ToUserName>&xxe;</ToUserName><MsgType>text</MsgType></xml>"
)
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<xml><MsgType>&lol3;</MsgType></xml>"
)


def aes_key_bytes() -> bytes:
    return base64.b64decode(AES_KEY + "=")


def raw_cbc(data: bytes, *, decrypt: bool = False) -> bytes:
    """AES-256-CBC with §5.3's key and IV and no padding: a forger's tool."""
    key = aes_key_bytes()
    cipher = Cipher(algorithms.AES(key), modes.CBC(key[:16]))
    context = cipher.decryptor() if decrypt else cipher.encryptor()
    return context.update(data) + context.finalize()


def seal_plaintext(plain: bytes) -> str:
    """The <Encrypt> value of an already padded, hand-made plaintext."""
    return base64.b64encode(raw_cbc(plain)).decode("ascii")


def safe_codec(**kwargs: object) -> CallbackCodec:
    return CallbackCodec(TOKEN, APPID, AES_KEY, **kwargs)  # type: ignore[arg-type]


def resigned(encrypt: str, to_user: str = "gh_97417a04a28d") -> tuple[dict[str, str], bytes]:
    """A safe-mode request around any Encrypt value, with both signatures valid."""
    query = {
        "signature": SIGNATURE,
        "timestamp": TIMESTAMP,
        "nonce": NONCE,
        "encrypt_type": "aes",
        "msg_signature": sign(TOKEN, TIMESTAMP, NONCE, encrypt),
    }
    body = f"<xml><ToUserName>{to_user}</ToUserName><Encrypt>{encrypt}</Encrypt></xml>"
    return query, body.encode()


def vector_encrypt() -> str:
    return Envelope(AES_KEY, APPID).encrypt(MSG, RANDOM16)


# ---------------------------------------------------------------------------
# Signatures


def test_signature_matches_the_official_example() -> None:
    assert sign(TOKEN, TIMESTAMP, NONCE) == SIGNATURE


def test_signature_sorts_its_parts_so_their_order_does_not_matter() -> None:
    assert sign(TOKEN, NONCE, TIMESTAMP) == SIGNATURE


def test_verify_signature_accepts_the_official_example() -> None:
    assert verify_signature(TOKEN, TIMESTAMP, NONCE, SIGNATURE)


def test_verify_signature_refuses_a_signature_with_one_character_changed() -> None:
    assert not verify_signature(TOKEN, TIMESTAMP, NONCE, SIGNATURE[:-1] + "9")


@pytest.mark.parametrize(
    ("token", "timestamp", "nonce", "signature"),
    [
        (TOKEN, TIMESTAMP, NONCE, None),
        (TOKEN, None, NONCE, SIGNATURE),
        (TOKEN, TIMESTAMP, "", SIGNATURE),
        ("", TIMESTAMP, NONCE, sign("", TIMESTAMP, NONCE)),
        (TOKEN, TIMESTAMP, NONCE, "签名" * 20),
        (TOKEN, TIMESTAMP, NONCE, "\ud800" * 40),
        (TOKEN, "\udfff", NONCE, SIGNATURE),
        (TOKEN, TIMESTAMP, NONCE, SIGNATURE.upper()),
    ],
)
def test_verify_signature_is_false_for_missing_or_odd_input(
    token: str, timestamp: str | None, nonce: str | None, signature: str | None
) -> None:
    assert verify_signature(token, timestamp, nonce, signature) is False


def test_msg_signature_of_the_safe_mode_vector() -> None:
    encrypt = vector_encrypt()
    assert sign(TOKEN, TIMESTAMP, NONCE, encrypt) == MSG_SIGNATURE
    assert verify_msg_signature(TOKEN, TIMESTAMP, NONCE, encrypt, MSG_SIGNATURE)


def test_msg_signature_covers_the_encrypt_value() -> None:
    assert not verify_msg_signature(TOKEN, TIMESTAMP, NONCE, vector_encrypt() + "x", MSG_SIGNATURE)
    assert not verify_msg_signature(TOKEN, TIMESTAMP, NONCE, None, MSG_SIGNATURE)


# ---------------------------------------------------------------------------
# The AES envelope


def test_safe_mode_vector_encrypts_byte_for_byte_as_section_5_3() -> None:
    encrypt = vector_encrypt()
    assert len(encrypt) == 472
    assert encrypt.startswith(ENCRYPT_PREFIX)
    padded = raw_cbc(base64.b64decode(encrypt), decrypt=True)
    assert len(padded) == 352
    assert padded[-19:] == bytes([19]) * 19
    assert padded[-20] != 19
    assert padded.startswith(RANDOM16 + len(MSG).to_bytes(4, "big") + MSG.encode())


def test_decrypting_the_safe_mode_vector_gives_the_xml_back() -> None:
    assert Envelope(AES_KEY, APPID).decrypt(vector_encrypt()) == MSG.encode()


def test_a_plaintext_already_aligned_to_32_bytes_gets_a_full_block_of_padding() -> None:
    message = "x" * (64 - 20 - len(APPID))
    sealed = base64.b64decode(Envelope(AES_KEY, APPID).encrypt(message, RANDOM16))
    assert len(sealed) == 96
    assert raw_cbc(sealed, decrypt=True)[-32:] == bytes([32]) * 32


def test_each_encryption_draws_a_fresh_random_prefix() -> None:
    envelope = Envelope(AES_KEY, APPID)
    first, second = envelope.encrypt(MSG), envelope.encrypt(MSG)
    assert first != second
    assert envelope.decrypt(first) == envelope.decrypt(second) == MSG.encode()


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (AES_KEY[:-1], "not base64"),
        (AES_KEY + "AAAA", "decodes to 35 bytes"),
        (AES_KEY[:-1] + "!", "not base64"),
    ],
)
def test_an_aes_key_that_does_not_decode_to_32_bytes_is_a_value_error(
    key: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        Envelope(key, APPID)
    assert key not in str(caught.value)


def test_random16_of_another_length_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Envelope(AES_KEY, APPID).encrypt(MSG, b"short")


def vector_plain_body() -> bytes:
    """The §5.3 plaintext before padding: random16, length, XML, appid."""
    return RANDOM16 + len(MSG).to_bytes(4, "big") + MSG.encode() + APPID.encode()


def flip(encrypt: str, index: int, mask: int) -> str:
    sealed = bytearray(base64.b64decode(encrypt))
    sealed[index] ^= mask
    return base64.b64encode(bytes(sealed)).decode()


@pytest.mark.parametrize(
    ("encrypt", "error", "detail"),
    [
        ("not base64 at all!", CallbackDecryptError, "not base64"),
        ("密文", CallbackDecryptError, "not base64"),
        ("", CallbackDecryptError, "AES blocks"),
        (base64.b64encode(b"x" * 40).decode(), CallbackDecryptError, "AES blocks"),
        # the last plaintext byte (the pad length) becomes 19 ^ 0xff = 236
        (flip(vector_encrypt(), 352 - 17, 0xFF), CallbackDecryptError, "padding"),
        # the high byte of the declared length (plaintext byte 16) becomes 0x80
        (flip(vector_encrypt(), 0, 0x80), CallbackDecryptError, "declared message length"),
        (
            base64.b64encode(base64.b64decode(vector_encrypt())[:-32]).decode(),
            CallbackDecryptError,
            "padding",
        ),
        (seal_plaintext(b"\x00" * 63 + b"\x00"), CallbackDecryptError, "padding"),
        (seal_plaintext(b"\x00" * 31 + b"\x21" * 33), CallbackDecryptError, "padding"),
        (seal_plaintext(b"\x00" * 60 + b"\x03\x04\x04\x04"), CallbackDecryptError, "padding"),
        (seal_plaintext(b"\x00" * 14 + b"\x12" * 18), CallbackDecryptError, "shorter"),
        (
            seal_plaintext(RANDOM16 + (2**31).to_bytes(4, "big") + b"\x0c" * 12),
            CallbackDecryptError,
            "declared message length",
        ),
        (
            seal_plaintext(vector_plain_body()[:-1] + b"2" + b"\x13" * 19),
            CallbackAppIdError,
            "appid other than wx0000000000000001",
        ),
    ],
    ids=[
        "bad-base64",
        "non-ascii",
        "empty",
        "not-a-block-multiple",
        "tampered-pad-byte",
        "tampered-length",
        "truncated",
        "pad-byte-zero",
        "pad-byte-33",
        "pad-bytes-unequal",
        "shorter-than-header",
        "length-beyond-buffer",
        "appid-tail-differs",
    ],
)
def test_decrypt_rejects_broken_envelopes_cleanly(
    encrypt: str, error: type[CallbackRejected], detail: str
) -> None:
    with pytest.raises(error, match=detail) as caught:
        Envelope(AES_KEY, APPID).decrypt(encrypt)
    assert type(caught.value) is error
    assert MSG not in str(caught.value)


def test_an_envelope_sealed_for_another_appid_is_an_appid_error() -> None:
    encrypt = Envelope(AES_KEY, "wxANOTHERAPP00000").encrypt(MSG)
    with pytest.raises(CallbackAppIdError) as caught:
        Envelope(AES_KEY, APPID).decrypt(encrypt)
    assert caught.value.reason == "appid"
    assert "wxANOTHERAPP00000" not in str(caught.value)


@settings(max_examples=150, deadline=None)
@given(message=st.text(), appid=st.text(min_size=1, max_size=40))
def test_encrypt_then_decrypt_gives_any_text_back_for_any_appid(message: str, appid: str) -> None:
    envelope = Envelope(AES_KEY, appid)
    assert envelope.decrypt(envelope.encrypt(message)) == message.encode()


@settings(max_examples=300, deadline=None)
@given(encrypt=st.one_of(st.text(), st.binary().map(lambda b: base64.b64encode(b).decode())))
def test_decrypt_of_arbitrary_input_raises_nothing_but_callback_rejected(encrypt: str) -> None:
    with contextlib.suppress(CallbackRejected):
        Envelope(AES_KEY, APPID).decrypt(encrypt)


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.integers(min_value=1, max_value=6).flatmap(
        lambda n: st.binary(min_size=16 * n, max_size=16 * n)
    )
)
def test_decrypt_of_any_hand_made_plaintext_raises_nothing_but_callback_rejected(
    blocks: bytes,
) -> None:
    with contextlib.suppress(CallbackRejected):
        Envelope(AES_KEY, APPID).decrypt(seal_plaintext(blocks))


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(min_value=0, max_value=90) | st.integers(min_value=0, max_value=2**32 - 1),
    middle=st.binary(max_size=80),
    tail=st.sampled_from([b"", b"wx", APPID.encode(), APPID.encode() + b"\x00"]),
)
def test_decrypt_of_well_padded_plaintexts_returns_the_message_only_for_our_appid(
    length: int, middle: bytes, tail: bytes
) -> None:
    # Well padded, so the length and appid checks are the ones that decide.
    body = RANDOM16 + length.to_bytes(4, "big") + middle + tail
    size = 32 - len(body) % 32
    try:
        xml = Envelope(AES_KEY, APPID).decrypt(seal_plaintext(body + bytes([size]) * size))
    except CallbackRejected:
        return
    assert xml == body[20 : 20 + length]
    assert body[20 + length :] == APPID.encode()


# ---------------------------------------------------------------------------
# Parsing events


def test_template_finish_xml_renders_the_section_5_3_document_exactly() -> None:
    assert (
        template_finish_xml("gh_97417a04a28d", "oUSER_OPENID", 1714037059, 200163836, "success")
        == MSG
    )


def test_template_finish_parses_into_its_typed_event() -> None:
    event = parse_message(MSG.encode())
    assert event == TemplateSendJobFinish(
        to_user="gh_97417a04a28d",
        from_user="oUSER_OPENID",
        create_time=1714037059,
        msgid=200163836,
        status="success",
    )
    assert event.delivered and event.outcome is ReportOutcome.DELIVERED


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("failed:user block", ReportOutcome.USER_BLOCK),
        ("failed: system failed", ReportOutcome.SYSTEM_FAILED),
        ("failed:freq limit", ReportOutcome.FREQ_LIMIT),
    ],
)
def test_failed_statuses_are_kept_raw_and_decided_into_an_outcome(
    status: str, outcome: ReportOutcome
) -> None:
    event = parse_message(template_finish_xml("gh_a", "oU", 1, 2, status).encode())
    assert isinstance(event, TemplateSendJobFinish)
    assert event.status == status
    assert event.outcome is outcome and not event.delivered


def test_a_report_with_msgid_spelled_msgid_in_lower_case_is_read() -> None:
    # Official docs and dumps spell it MsgID; some SDKs read MsgId (review row 10).
    event = parse_message(MSG.replace("MsgID", "MsgId").encode())
    assert isinstance(event, TemplateSendJobFinish)
    assert event.msgid == 200163836


def test_a_msgid_above_2_to_the_53_stays_exact() -> None:
    msgid = 2**53 + 1
    event = parse_message(template_finish_xml("gh_a", "oU", 1, msgid, "success").encode())
    assert isinstance(event, TemplateSendJobFinish)
    assert event.msgid == 9007199254740993


def test_the_pretty_printed_example_of_section_5_5_parses() -> None:
    xml = b"""<xml>
      <ToUserName><![CDATA[gh_xxx]]></ToUserName>
      <FromUserName><![CDATA[oUSER]]></FromUserName>
      <CreateTime>1395658920</CreateTime>
      <MsgType><![CDATA[event]]></MsgType>
      <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>
      <MsgID>200163836</MsgID>
      <Status><![CDATA[failed:user block]]></Status>
    </xml>"""
    event = parse_message(xml)
    assert isinstance(event, TemplateSendJobFinish)
    assert (event.create_time, event.msgid, event.status) == (
        1395658920,
        200163836,
        "failed:user block",
    )


def subscribe_event(event: str, container: str, *items: str) -> bytes:
    lists = "".join(f"<List>{item}</List>" for item in items)
    return (
        "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>"
        "<FromUserName><![CDATA[oUSER]]></FromUserName><CreateTime>1610969440</CreateTime>"
        f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>"
        f"<{container}>{lists}</{container}></xml>"
    ).encode()


POPUP_ACCEPT = (
    "<TemplateId><![CDATA[tpl-a]]></TemplateId>"
    "<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene>"
)
POPUP_REJECT = (
    "<TemplateId><![CDATA[tpl-b]]></TemplateId>"
    "<SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString><PopupScene>1</PopupScene>"
)


def test_a_single_list_item_becomes_a_one_item_tuple() -> None:
    event = parse_message(
        subscribe_event("subscribe_msg_popup_event", "SubscribeMsgPopupEvent", POPUP_ACCEPT)
    )
    assert isinstance(event, SubscribePopupEvent)
    assert len(event.items) == 1
    item = event.items[0]
    assert (item.template_id, item.status, item.popup_scene, item.accepted) == (
        "tpl-a",
        "accept",
        2,
        True,
    )


def test_repeated_list_items_become_a_tuple_in_document_order() -> None:
    event = parse_message(
        subscribe_event(
            "subscribe_msg_popup_event", "SubscribeMsgPopupEvent", POPUP_ACCEPT, POPUP_REJECT
        )
    )
    assert isinstance(event, SubscribePopupEvent)
    assert isinstance(event.items, tuple)
    assert [(i.template_id, i.accepted) for i in event.items] == [("tpl-a", True), ("tpl-b", False)]
    assert (event.to_user, event.from_user, event.create_time) == (
        "gh_123456789abc",
        "oUSER",
        1610969440,
    )


def test_subscribe_change_event_reads_its_items() -> None:
    event = parse_message(
        subscribe_event(
            "subscribe_msg_change_event",
            "SubscribeMsgChangeEvent",
            "<TemplateId>tpl-a</TemplateId><SubscribeStatusString>reject</SubscribeStatusString>",
        )
    )
    assert isinstance(event, SubscribeChangeEvent)
    assert event.items[0].template_id == "tpl-a"
    assert not event.items[0].accepted


def test_subscribe_sent_event_reads_exact_msgids_and_results() -> None:
    event = parse_message(
        subscribe_event(
            "subscribe_msg_sent_event",
            "SubscribeMsgSentEvent",
            "<TemplateId>tpl-a</TemplateId><MsgID>1700827132819554304</MsgID>"
            "<ErrorCode>0</ErrorCode><ErrorStatus><![CDATA[success]]></ErrorStatus>",
            "<TemplateId>tpl-b</TemplateId><MsgID>9007199254740993</MsgID>"
            "<ErrorCode>43101</ErrorCode><ErrorStatus>failed:user refuse</ErrorStatus>",
        )
    )
    assert isinstance(event, SubscribeSentEvent)
    assert [(i.msgid, i.error_code, i.delivered) for i in event.items] == [
        (1700827132819554304, 0, True),
        (9007199254740993, 43101, False),
    ]


def test_a_subscribe_event_without_list_items_names_the_missing_list() -> None:
    with pytest.raises(CallbackMalformedError, match=r": List is missing") as caught:
        parse_message(subscribe_event("subscribe_msg_sent_event", "SubscribeMsgSentEvent"))
    assert caught.value.reason == "field"


def test_a_user_text_message_is_an_other_message_with_its_fields() -> None:
    xml = (
        b"<xml><ToUserName>gh_a</ToUserName><FromUserName>oU</FromUserName>"
        b"<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>hello</Content>"
        b"<MsgId>1234567890123456</MsgId></xml>"
    )
    message = parse_message(xml)
    assert isinstance(message, OtherMessage)
    assert (message.msg_type, message.event) == ("text", "")
    assert message.fields["Content"] == "hello"
    assert message.fields["MsgId"] == "1234567890123456"


@pytest.mark.parametrize(("event", "followed"), [("subscribe", True), ("unsubscribe", False)])
def test_a_follow_event_names_the_openid_of_who_followed_or_left(
    event: str, followed: bool
) -> None:
    xml = (
        "<xml><ToUserName><![CDATA[gh_a]]></ToUserName>"
        "<FromUserName><![CDATA[oFOLLOWER]]></FromUserName><CreateTime>123</CreateTime>"
        f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>"
        "<EventKey><![CDATA[]]></EventKey></xml>"
    )
    assert parse_message(xml.encode()) == FollowEvent("gh_a", "oFOLLOWER", 123, followed)


def test_a_menu_event_is_an_other_message_naming_its_event() -> None:
    xml = b"<xml><MsgType>event</MsgType><Event>CLICK</Event><EventKey>K1</EventKey></xml>"
    message = parse_message(xml)
    assert isinstance(message, OtherMessage)
    assert (message.msg_type, message.event, message.fields["EventKey"]) == (
        "event",
        "CLICK",
        "K1",
    )


@pytest.mark.parametrize(
    ("xml", "field"),
    [
        (MSG.replace("<MsgID>200163836</MsgID>", ""), "MsgID"),
        (MSG.replace("<MsgID>200163836</MsgID>", "<MsgID>2e8</MsgID>"), "MsgID"),
        (MSG.replace("<MsgID>200163836</MsgID>", "<MsgID>" + "9" * 21 + "</MsgID>"), "MsgID"),
        (MSG.replace("1714037059", "yesterday"), "CreateTime"),
        (MSG.replace("<![CDATA[success]]>", ""), "Status"),
        (MSG.replace("<ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>", ""), "ToUserName"),
        ("<xml><Event>TEMPLATESENDJOBFINISH</Event></xml>", "MsgType"),
        (
            subscribe_event(
                "subscribe_msg_popup_event",
                "SubscribeMsgPopupEvent",
                POPUP_ACCEPT.replace("<PopupScene>2</PopupScene>", "<PopupScene>two</PopupScene>"),
            ).decode(),
            "List.PopupScene",
        ),
    ],
)
def test_a_missing_or_garbled_field_is_refused_naming_the_field(xml: str, field: str) -> None:
    with pytest.raises(CallbackMalformedError) as caught:
        parse_message(xml.encode())
    assert caught.value.reason == "field"
    assert caught.value.detail.split(" ")[0] == field
    assert "yesterday" not in str(caught.value) and "two" not in caught.value.detail


@pytest.mark.parametrize(
    "xml", [XXE, BILLION_LAUGHS, b"<!DOCTYPE xml><xml><MsgType>text</MsgType></xml>"]
)
def test_xml_with_a_dtd_or_entities_is_refused(xml: bytes) -> None:
    with pytest.raises(CallbackMalformedError) as caught:
        parse_message(xml)
    assert caught.value.reason == "xml"
    assert "DTD" in str(caught.value)


@pytest.mark.parametrize(
    "xml",
    [b"", b"success", b"<xml><MsgType>text</xml>", b'<?xml version="1.0" encoding="nope"?><xml/>'],
)
def test_a_body_that_is_not_xml_is_refused(xml: bytes) -> None:
    with pytest.raises(CallbackMalformedError) as caught:
        parse_message(xml)
    assert caught.value.reason == "xml"


XML_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Cn")), min_size=1, max_size=40
)


@settings(max_examples=150, deadline=None)
@given(
    to_user=XML_TEXT,
    from_user=XML_TEXT,
    create_time=st.integers(min_value=0, max_value=2**40),
    msgid=st.integers(min_value=0, max_value=2**64 - 1),
    status=XML_TEXT,
)
def test_template_finish_xml_round_trips_through_parse_message(
    to_user: str, from_user: str, create_time: int, msgid: int, status: str
) -> None:
    xml = template_finish_xml(to_user, from_user, create_time, msgid, status)
    assert parse_message(xml.encode()) == TemplateSendJobFinish(
        to_user, from_user, create_time, msgid, status
    )


@settings(max_examples=300, deadline=None)
@given(
    xml=st.one_of(
        st.binary(max_size=200),
        st.text(alphabet="<>/![]CDAT xmlMsgTypeEvntID0123&;", max_size=120).map(str.encode),
    )
)
def test_parse_message_of_arbitrary_bytes_raises_nothing_but_callback_rejected(xml: bytes) -> None:
    with contextlib.suppress(CallbackRejected):
        parse_message(xml)


# ---------------------------------------------------------------------------
# The codec


def test_verify_echo_answers_echostr_when_the_signature_holds() -> None:
    query = {"signature": SIGNATURE, "timestamp": TIMESTAMP, "nonce": NONCE, "echostr": "e-123"}
    assert safe_codec().verify_echo(query) == "e-123"


def test_verify_echo_refuses_a_wrong_signature() -> None:
    query = {"signature": "0" * 40, "timestamp": TIMESTAMP, "nonce": NONCE, "echostr": "e-123"}
    with pytest.raises(CallbackSignatureError) as caught:
        safe_codec().verify_echo(query)
    assert caught.value.reason == "signature"


def test_verify_echo_refuses_a_signed_request_without_echostr() -> None:
    query = {"signature": SIGNATURE, "timestamp": TIMESTAMP, "nonce": NONCE}
    with pytest.raises(CallbackMalformedError, match="echostr"):
        safe_codec().verify_echo(query)


def test_a_codec_with_an_empty_token_refuses_every_request() -> None:
    codec = CallbackCodec("", APPID)
    query = {"timestamp": TIMESTAMP, "nonce": NONCE, "echostr": "e"}
    query["signature"] = sign("", TIMESTAMP, NONCE)
    with pytest.raises(CallbackSignatureError):
        codec.verify_echo(query)


def test_open_reads_a_plaintext_callback() -> None:
    codec = CallbackCodec(TOKEN, APPID)
    query, body = codec.seal(MSG, TIMESTAMP, NONCE, openid="oUSER_OPENID")
    assert query == {
        "signature": SIGNATURE,
        "timestamp": TIMESTAMP,
        "nonce": NONCE,
        "openid": "oUSER_OPENID",
    }
    assert body == MSG.encode()
    assert codec.open(query, body) == parse_message(MSG.encode())


def test_seal_builds_the_safe_mode_request_of_the_vector() -> None:
    query, body = safe_codec().seal(MSG, TIMESTAMP, NONCE, openid="oUSER_OPENID", random16=RANDOM16)
    assert query["encrypt_type"] == "aes"
    assert query["msg_signature"] == MSG_SIGNATURE
    assert query["signature"] == SIGNATURE
    assert (
        body
        == (
            f"<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>"
            f"<Encrypt><![CDATA[{vector_encrypt()}]]></Encrypt></xml>"
        ).encode()
    )
    assert b"oUSER_OPENID" not in body


def test_open_reads_a_safe_mode_callback() -> None:
    codec = safe_codec()
    query, body = codec.seal(MSG, TIMESTAMP, NONCE)
    event = codec.open(query, body)
    assert isinstance(event, TemplateSendJobFinish)
    assert (event.msgid, event.status) == (200163836, "success")


def test_open_believes_only_the_encrypted_copy_in_compatible_mode() -> None:
    codec = safe_codec()
    query, body = codec.seal(MSG, TIMESTAMP, NONCE, compatible=True)
    plain_status = b"<Status><![CDATA[success]]></Status>"
    assert body.count(plain_status) == 1 and b"<Encrypt>" in body
    forged = body.replace(plain_status, b"<Status><![CDATA[failed:user block]]></Status>")
    event = codec.open(query, forged)
    assert isinstance(event, TemplateSendJobFinish)
    assert event.status == "success"


def test_open_refuses_a_wrong_signature() -> None:
    codec = safe_codec()
    query, body = codec.seal(MSG, TIMESTAMP, NONCE)
    query["signature"] = sign("another-token", TIMESTAMP, NONCE)
    with pytest.raises(CallbackSignatureError) as caught:
        codec.open(query, body)
    assert caught.value.reason == "signature"


def test_open_refuses_a_wrong_msg_signature_before_decrypting() -> None:
    # The Encrypt value is garbage: only the msg_signature check can be what refuses it.
    query, body = resigned("AAAA")
    query["msg_signature"] = MSG_SIGNATURE
    with pytest.raises(CallbackSignatureError) as caught:
        safe_codec().open(query, body)
    assert caught.value.reason == "msg_signature"


def test_open_refuses_a_tampered_ciphertext_even_when_resigned() -> None:
    query, body = resigned(flip(vector_encrypt(), 352 - 17, 0xFF))
    with pytest.raises(CallbackDecryptError) as caught:
        safe_codec().open(query, body)
    assert caught.value.reason == "decrypt"


def test_open_refuses_a_truncated_ciphertext() -> None:
    truncated = base64.b64encode(base64.b64decode(vector_encrypt())[:-16]).decode()
    query, body = resigned(truncated)
    with pytest.raises(CallbackDecryptError):
        safe_codec().open(query, body)


def test_open_refuses_a_callback_sealed_for_another_appid() -> None:
    other = CallbackCodec(TOKEN, "wxANOTHERAPP00000", AES_KEY)
    query, body = other.seal(MSG, TIMESTAMP, NONCE)
    with pytest.raises(CallbackAppIdError) as caught:
        safe_codec().open(query, body)
    assert caught.value.reason == "appid"


def test_open_refuses_plaintext_when_a_key_is_configured() -> None:
    query, body = CallbackCodec(TOKEN, APPID).seal(MSG, TIMESTAMP, NONCE)
    with pytest.raises(CallbackDecryptError) as caught:
        safe_codec().open(query, body)
    assert caught.value.reason == "encryption_required"


def test_open_accepts_plaintext_and_safe_mode_when_encryption_is_optional() -> None:
    codec = safe_codec(require_encryption=False)
    assert not codec.require_encryption
    for encrypt in (False, True):
        query, body = codec.seal(MSG, TIMESTAMP, NONCE, encrypt=encrypt)
        assert isinstance(codec.open(query, body), TemplateSendJobFinish)


def test_requiring_encryption_without_a_key_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="EncodingAESKey"):
        CallbackCodec(TOKEN, APPID, require_encryption=True)


def test_open_refuses_an_encrypted_callback_when_no_key_is_configured() -> None:
    query, body = safe_codec().seal(MSG, TIMESTAMP, NONCE)
    with pytest.raises(CallbackDecryptError, match="no key"):
        CallbackCodec(TOKEN, APPID).open(query, body)


def test_open_refuses_an_unknown_encrypt_type() -> None:
    query, body = CallbackCodec(TOKEN, APPID).seal(MSG, TIMESTAMP, NONCE)
    query["encrypt_type"] = "des"
    with pytest.raises(CallbackMalformedError, match="encrypt_type"):
        CallbackCodec(TOKEN, APPID).open(query, body)


def test_open_refuses_a_safe_mode_body_without_encrypt() -> None:
    query, _ = safe_codec().seal(MSG, TIMESTAMP, NONCE)
    with pytest.raises(CallbackMalformedError, match="Encrypt"):
        safe_codec().open(query, MSG.encode())


@pytest.mark.parametrize("xml", [XXE, BILLION_LAUGHS])
def test_open_does_not_expand_entities_in_a_signed_plaintext_body(xml: bytes) -> None:
    # WeChat never sends a DTD: refused as hostile even under a valid signature.
    codec = CallbackCodec(TOKEN, APPID)
    query, _ = codec.seal(MSG, TIMESTAMP, NONCE)
    with pytest.raises(HostileDocument) as caught:
        codec.open(query, xml)
    assert "DTD" in caught.value.detail


@pytest.mark.parametrize("xml", [XXE, BILLION_LAUGHS])
def test_open_does_not_expand_entities_inside_the_encrypted_payload(xml: bytes) -> None:
    query, body = resigned(Envelope(AES_KEY, APPID).encrypt(xml))
    with pytest.raises(HostileDocument) as caught:
        safe_codec().open(query, body)
    assert "DTD" in caught.value.detail


def test_open_refuses_entities_around_the_encrypt_element() -> None:
    query, _ = safe_codec().seal(MSG, TIMESTAMP, NONCE)
    body = BILLION_LAUGHS.replace(b"<MsgType>&lol3;</MsgType>", b"<Encrypt>&lol3;</Encrypt>")
    with pytest.raises(CallbackMalformedError):
        safe_codec().open(query, body)


def test_rejections_never_show_the_token_the_key_or_the_plaintext() -> None:
    secret_token = "tok-Very-Secret-0001"
    codec = CallbackCodec(secret_token, APPID, AES_KEY)
    query, body = codec.seal(MSG, TIMESTAMP, NONCE)
    other_query, other_body = CallbackCodec(secret_token, "wxOTHERAPPID00000", AES_KEY).seal(
        MSG, TIMESTAMP, NONCE
    )
    plain_query, plain_body = CallbackCodec(secret_token, APPID).seal(MSG, TIMESTAMP, NONCE)
    attempts = [
        ({**query, "signature": "0" * 40}, body),
        ({**query, "msg_signature": "0" * 40}, body),
        (other_query, other_body),
        (plain_query, plain_body),
        ({**query, "encrypt_type": "raw"}, body),
    ]
    for attempt_query, attempt_body in attempts:
        with pytest.raises(CallbackRejected) as caught:
            codec.open(attempt_query, attempt_body)
        text = f"{caught.value} {caught.value!r}"
        for secret in (secret_token, AES_KEY, "oUSER_OPENID", "wxOTHERAPPID00000"):
            assert secret not in text
    assert secret_token not in repr(codec) and AES_KEY not in repr(codec)


@settings(max_examples=200, deadline=None)
@given(
    query=st.dictionaries(
        st.sampled_from(
            ["signature", "timestamp", "nonce", "encrypt_type", "msg_signature", "echostr"]
        ),
        st.one_of(st.text(max_size=50), st.sampled_from([SIGNATURE, TIMESTAMP, NONCE, "aes"])),
    ),
    body=st.binary(max_size=300),
)
def test_open_of_arbitrary_requests_raises_nothing_but_callback_rejected(
    query: dict[str, str], body: bytes
) -> None:
    for codec in (safe_codec(), CallbackCodec(TOKEN, APPID)):
        with contextlib.suppress(CallbackRejected):
            codec.open(query, body)


def test_callback_timestamp_reads_the_query_timestamp() -> None:
    assert callback_timestamp({"timestamp": TIMESTAMP}) == 1714037059


@pytest.mark.parametrize("query", [{}, {"timestamp": ""}, {"timestamp": "soon"}])
def test_callback_timestamp_refuses_a_missing_or_garbled_timestamp(
    query: dict[str, str],
) -> None:
    with pytest.raises(CallbackMalformedError, match="timestamp"):
        callback_timestamp(query)
