"""Every callback event in every mode and encoding: XML and a mini program's JSON
(List an object or an array, CreateTime a number or a string), in plaintext, safe and
compatible mode; List found under any wrapper; a signed document that cannot be read
is UnparseableEvent, which the route answers `success` (docs/wechat-protocol.md §5)."""

from __future__ import annotations

import orjson
import pytest

from wxgate.wechat.callback import (
    CallbackCodec,
    CallbackEvent,
    Envelope,
    FollowEvent,
    SubscribeChangeEvent,
    SubscribeChangeItem,
    SubscribePopupEvent,
    SubscribePopupItem,
    SubscribeSentEvent,
    SubscribeSentItem,
    TemplateSendJobFinish,
    event_json,
    event_xml,
    parse_message,
    sign,
)
from wxgate.wechat.errors import (
    CallbackDecryptError,
    CallbackMalformedError,
    CallbackSignatureError,
    UnparseableEvent,
)

TOKEN = "callback-token-0001"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx0000000000000001"
TIMESTAMP, NONCE = "1714037059", "486452656"
HEAD = ("gh_123456789abc", "oUSER_OPENID", 1610969440)

EVENTS: dict[str, CallbackEvent] = {
    "template_finish": TemplateSendJobFinish(*HEAD, msgid=2**63 - 5, status="failed:user block"),
    "popup_one": SubscribePopupEvent(*HEAD, items=(SubscribePopupItem("tpl-a", "accept", 0),)),
    "popup_two": SubscribePopupEvent(
        *HEAD,
        items=(SubscribePopupItem("tpl-a", "accept", 2), SubscribePopupItem("tpl-b", "reject", 1)),
    ),
    "change": SubscribeChangeEvent(*HEAD, items=(SubscribeChangeItem("tpl-a", "reject"),)),
    "sent": SubscribeSentEvent(
        *HEAD,
        items=(
            SubscribeSentItem("tpl-a", 1864323726461255680, 0, "success"),
            SubscribeSentItem("tpl-b", 9007199254740993, 43101, "failed:user refuse"),
        ),
    ),
    "follow": FollowEvent(*HEAD, followed=True),
    "unfollow": FollowEvent(*HEAD, followed=False),
}
ENCODINGS = {
    "xml": event_xml,
    "json": event_json,
    "json_list_always_an_array": lambda e: event_json(e, one_item_as_object=False),
    "json_create_time_as_text": lambda e: event_json(e, create_time_as_text=True),
}


def codec_for(mode: str) -> CallbackCodec:
    return CallbackCodec(TOKEN, APPID, AES_KEY if mode != "plaintext" else "")


@pytest.mark.parametrize("mode", ["plaintext", "safe", "compatible"])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("name", sorted(EVENTS))
def test_every_event_opens_back_in_every_mode_and_encoding(
    name: str, encoding: str, mode: str
) -> None:
    event = EVENTS[name]
    codec = codec_for(mode)
    document = ENCODINGS[encoding](event)
    query, body = codec.seal(document, TIMESTAMP, NONCE, compatible=mode == "compatible")
    assert codec.open(query, body) == event


def test_the_json_form_of_one_item_is_an_object_as_observed() -> None:
    document = orjson.loads(event_json(EVENTS["popup_one"]))
    assert document["List"] == {
        "TemplateId": "tpl-a",
        "SubscribeStatusString": "accept",
        "PopupScene": "0",
    }
    assert document["CreateTime"] == 1610969440


def test_a_safe_mode_json_body_carries_only_to_user_name_and_encrypt() -> None:
    _, body = codec_for("safe").seal(event_json(EVENTS["sent"]), TIMESTAMP, NONCE)
    assert set(orjson.loads(body)) == {"ToUserName", "Encrypt"}


def test_a_json_push_as_seen_in_2023_parses() -> None:
    # https://developers.weixin.qq.com/community/develop/doc/000a08f88180a0081400916f966400
    document = b"""{
        "CreateTime": 1688953684,
        "Event": "subscribe_msg_popup_event",
        "FromUserName": "o8dH44seYM3qeBzHlrmwI0sAtSfI",
        "List": {"PopupScene": "0", "SubscribeStatusString": "accept",
                 "TemplateId": "BDcgTGpwt7fcRVFhGh-NvjcASaWWmkwzN3y_6mXzJR4"},
        "MsgType": "event",
        "ToUserName": "gh_xxxxxxxxxx"
    }"""
    event = parse_message(document)
    assert event == SubscribePopupEvent(
        "gh_xxxxxxxxxx",
        "o8dH44seYM3qeBzHlrmwI0sAtSfI",
        1688953684,
        (SubscribePopupItem("BDcgTGpwt7fcRVFhGh-NvjcASaWWmkwzN3y_6mXzJR4", "accept", 0),),
    )


def test_a_json_list_under_the_documented_wrapper_key_parses() -> None:
    # The official example puts the array under "SubscribeMsgChangeEvent", not "List".
    document = {
        "ToUserName": "gh_123456789abc",
        "FromUserName": "o7esq5OI1Uej6Xixw1lA2H7XDVbc",
        "CreateTime": "1610968440",
        "MsgType": "event",
        "Event": "subscribe_msg_change_event",
        "SubscribeMsgChangeEvent": [{"TemplateId": "tpl-a", "SubscribeStatusString": "reject"}],
    }
    event = parse_message(orjson.dumps(document))
    assert isinstance(event, SubscribeChangeEvent)
    assert event.items == (SubscribeChangeItem("tpl-a", "reject"),)


@pytest.mark.parametrize(
    "wrapped",
    [
        "<SubscribeMsgPopupEvent>{items}</SubscribeMsgPopupEvent>",  # the doc bug, row 9
        "<SubscribeMsgChangeEvent>{items}</SubscribeMsgChangeEvent>",
        "{items}",  # no wrapper at all
    ],
)
def test_an_xml_list_is_found_under_any_wrapper(wrapped: str) -> None:
    items = (
        "<List><TemplateId>tpl-a</TemplateId>"
        "<SubscribeStatusString>reject</SubscribeStatusString></List>"
    )
    xml = (
        "<xml><ToUserName>gh_a</ToUserName><FromUserName>oU</FromUserName>"
        "<CreateTime>1</CreateTime><MsgType>event</MsgType>"
        "<Event>subscribe_msg_change_event</Event>" + wrapped.format(items=items) + "</xml>"
    )
    event = parse_message(xml.encode())
    assert isinstance(event, SubscribeChangeEvent)
    assert event.items == (SubscribeChangeItem("tpl-a", "reject"),)


def test_a_sent_item_with_msgid_spelled_msgid_in_lower_case_is_read() -> None:
    xml = event_xml(EVENTS["sent"]).replace("MsgID", "MsgId")
    assert parse_message(xml.encode()) == EVENTS["sent"]


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b'{"MsgType": "event", ', "json"),
        (b'{"MsgType": "event"', "json"),
        (b"[1, 2]", "xml"),  # not JSON by its first byte, and not XML either
        (b'{"MsgType": "event", "Event": "subscribe", "CreateTime": true}', "field"),
    ],
)
def test_a_malformed_json_document_is_refused_with_its_reason(document: bytes, reason: str) -> None:
    with pytest.raises(CallbackMalformedError) as caught:
        parse_message(document)
    assert caught.value.reason == reason


@pytest.mark.parametrize("mode", ["plaintext", "safe"])
@pytest.mark.parametrize(
    "document",
    [
        "<xml><MsgType>event</MsgType><Event>subscribe_msg_sent_event</Event></xml>",
        '{"MsgType": "event", "Event": "subscribe_msg_popup_event", "List": []}',
        "not a document at all",
    ],
)
def test_a_signed_document_that_cannot_be_read_is_unparseable_not_refused(
    mode: str, document: str
) -> None:
    codec = codec_for(mode)
    query = codec.seal("<xml/>", TIMESTAMP, NONCE, encrypt=False)[0]
    body = document.encode()  # plaintext: the signature covers the query only
    if mode == "safe":
        encrypt = Envelope(AES_KEY, APPID).encrypt(document)
        query |= {"encrypt_type": "aes", "msg_signature": sign(TOKEN, TIMESTAMP, NONCE, encrypt)}
        body = f"<xml><Encrypt>{encrypt}</Encrypt></xml>".encode()
    with pytest.raises(UnparseableEvent) as caught:
        codec.open(query, body)
    assert caught.value.reason == "unparseable"
    assert isinstance(caught.value, CallbackMalformedError)  # a 400 until the route learns it


def test_an_unsigned_unreadable_document_is_a_signature_error_not_unparseable() -> None:
    codec = codec_for("plaintext")
    query = {"signature": "0" * 40, "timestamp": TIMESTAMP, "nonce": NONCE}
    with pytest.raises(CallbackSignatureError):
        codec.open(query, b"garbage")


def test_a_safe_mode_envelope_that_cannot_be_read_is_not_believed_as_unparseable() -> None:
    codec = codec_for("safe")
    query, _ = codec.seal(event_xml(EVENTS["follow"]), TIMESTAMP, NONCE)
    with pytest.raises(CallbackMalformedError) as caught:
        codec.open(query, b'{"ToUserName": "gh_a"}')  # no Encrypt: msg_signature unchecked
    assert not isinstance(caught.value, UnparseableEvent)
    garbage = "bm90IGFlcw=="
    query["msg_signature"] = sign(TOKEN, TIMESTAMP, NONCE, garbage)
    with pytest.raises(CallbackDecryptError):
        codec.open(query, orjson.dumps({"ToUserName": "gh_a", "Encrypt": garbage}))
