"""`wxgate send --kind` and `wxgate grants list`: a subscribe notification sent from the
command line through a live gateway, and the grant ledger read back from storage."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import API_KEY
from tests.test_cli import APP, LiveGateway, invoke, live, live_config, write_config
from wxgate.backends.base import Status
from wxgate.sandbox.config import DEFAULT_APPID

__all__ = ["live", "live_config"]  # the fixtures, used by name

ORDER_SHIPPED = b"tid=1001&kidList=1&kidList=2&kidList=3&kidList=6"


def test_send_kind_subscribe_goes_out_through_bizsend_and_uses_the_grant(
    live: LiveGateway, live_config: Path, tmp_path: Path
) -> None:
    assert live.sandbox is not None and live.control is not None
    template_id = live.sandbox.wechat.account(DEFAULT_APPID).subscribe_templates.add(ORDER_SHIPPED)
    live.run(live.control.popup(DEFAULT_APPID, "oCli_sub", template_id))
    live.run(live.control.wait_for_callbacks())
    storage = write_config(tmp_path / "ops.toml", live.db_path, port=live.port)
    listed = invoke("grants", "list", "--touser", "oCli_sub", "--config", str(storage))
    assert listed.exit_code == 0, listed.output
    assert template_id in listed.stdout and "│ 1 " in listed.stdout

    result = invoke(
        "send", "--kind", "subscribe", "--touser", "oCli_sub", "--template-id", template_id,
        "-d", "character_string1=XN2024050100123", "-d", "thing2=无线蓝牙耳机",
        "-d", "time3=2024-05-01 15:01", "-d", "enum_string6=已发货",
        "--page", "https://shop.example.com/o/1", "--api-key", API_KEY,
        "--config", str(live_config),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "HTTP 202" in result.stdout
    live.wait_delivered(1)
    [received] = live.run(live.control.messages(kind="subscribe"))
    assert received["touser"] == "oCli_sub"
    assert live.statuses() == {Status.DELIVERED: 1}
    after = invoke("grants", "list", "--app", APP, "--touser", "oCli_sub", "--config", str(storage))
    assert after.exit_code == 0 and "no grant known" in after.stdout


def test_send_kind_refused_for_a_field_of_another_kind(
    live: LiveGateway, live_config: Path
) -> None:
    result = invoke(
        "send", "--kind", "subscribe", "--touser", "oCli_sub", "--template-id", "tpl",
        "-d", "thing2=x", "--lang", "en_US", "--api-key", API_KEY, "--config", str(live_config),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "HTTP 400" in result.output and "lang" in result.output
