"""`wxgate templates` and `wxgate suppressions`, run through typer's CliRunner against
a sandbox on a loop of its own (test_cli's LiveGateway) and the config's SQLite file."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli import LiveGateway, invoke, live, write_config
from wxgate.sandbox.config import DEFAULT_SECRET

__all__ = ["live"]  # the fixture, imported for these tests


def _config(tmp_path: Path, live: LiveGateway) -> Path:
    assert live.sandbox is not None
    return write_config(
        tmp_path / "wxgate.toml",
        tmp_path / "cli.db",
        api_base=live.sandbox.base_url,
        secret=DEFAULT_SECRET,
    )


def _add_template(live: LiveGateway) -> str:
    gateway = live._gateway
    assert gateway is not None
    client = gateway.clients["shop"]
    return live.run(client.add_template("TM00303", ["订单号", "快递公司", "发货时间"]))


def test_templates_sync_then_list_and_show_its_keys(tmp_path: Path, live: LiveGateway) -> None:
    config = _config(tmp_path, live)
    template_id = _add_template(live)
    synced = invoke("templates", "sync", "--config", str(config))
    assert synced.exit_code == 0, synced.output
    assert "shop template: 1 template(s)" in synced.output
    listed = invoke("templates", "list", "--config", str(config))
    assert listed.exit_code == 0, listed.output
    assert template_id in listed.output and "thing2:thing" in listed.output
    shown = invoke("templates", "show", template_id, "--config", str(config))
    assert shown.exit_code == 0, shown.output
    assert '"character_string1"' in shown.output and DEFAULT_SECRET not in shown.output
    missing = invoke("templates", "show", "nope", "--config", str(config))
    assert missing.exit_code == 1 and "no template 'nope'" in missing.output


def test_suppressions_add_list_and_lift(tmp_path: Path, live: LiveGateway) -> None:
    config = _config(tmp_path, live)
    openids = tmp_path / "openids.txt"
    openids.write_text("oFILE1\noFILE2\n\n")
    added = invoke("suppressions", "add", "oARG", "--file", str(openids), "--config", str(config))
    assert added.exit_code == 0, added.output
    assert "3 newly suppressed of 3" in added.output
    listed = invoke("suppressions", "list", "--config", str(config))
    assert all(openid in listed.output for openid in ("oARG", "oFILE1", "oFILE2"))
    assert "operator" in listed.output
    lifted = invoke("suppressions", "lift", "oARG", "--config", str(config))
    assert lifted.exit_code == 0 and "oARG lifted" in lifted.output
    again = invoke("suppressions", "lift", "oARG", "--config", str(config))
    assert again.exit_code == 1
    one = invoke("suppressions", "list", "--touser", "oARG", "--config", str(config))
    assert "0 suppressed" in one.output
