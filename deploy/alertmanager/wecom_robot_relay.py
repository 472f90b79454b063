"""Relay Alertmanager's webhook notifications to a WeCom (企业微信) group robot (群机器人).

A robot takes only its own JSON ({"msgtype": "markdown", ...}), which Alertmanager's
webhook_configs cannot produce, so this relay reshapes each notification: one block
per alert (firing or resolved, name, severity, app, summary, description), cut to
the robot's 4096-byte limit. It answers 502 when the robot refuses, so Alertmanager
retries. Python's standard library only: it runs in the wxgate image or any Python.

    WECOM_ROBOT_URL='https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=<key>' \\
        python wecom_robot_relay.py --port 8080

The robot URL carries the robot's key: it comes from the environment and is never
logged. Alertmanager posts to http://<relay>:8080/alertmanager.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = "/alertmanager"
MAX_CONTENT_BYTES = 4096  # the robot's limit for markdown content
_TAIL_ROOM = 64  # kept for the "…N more" line
MAX_BODY_BYTES = 1 << 20
ROBOT_TIMEOUT_S = 10.0
_log = logging.getLogger("wecom_robot_relay")


def alert_block(alert: dict[str, Any]) -> str:
    labels = alert.get("labels", {})
    notes = alert.get("annotations", {})
    firing = alert.get("status") == "firing"
    state = '<font color="warning">告警</font>' if firing else '<font color="info">恢复</font>'
    app = f" app={labels['app']}" if "app" in labels else ""
    head = f"**{state} {labels.get('alertname', '?')}** ({labels.get('severity', '-')}){app}"
    return f"{head}\n> {notes.get('summary', '')}\n{notes.get('description', '')}"


def markdown(notification: dict[str, Any]) -> str:
    """The robot's markdown for one notification: whole alerts while they fit in
    MAX_CONTENT_BYTES, then how many more Alertmanager holds."""
    blocks = [alert_block(alert) for alert in notification.get("alerts", [])]
    room = MAX_CONTENT_BYTES - _TAIL_ROOM
    kept: list[str] = []
    for block in blocks:
        if len("\n\n".join([*kept, block]).encode()) > room:
            break
        kept.append(block)
    if blocks and not kept:  # one alert longer than the limit: cut it
        kept = [blocks[0].encode()[:room].decode(errors="ignore") + "…"]
    content = "\n\n".join(kept)
    if len(blocks) > len(kept):
        content += f"\n\n…{len(blocks) - len(kept)} more in Alertmanager"
    return content


def post_to_robot(robot_url: str, content: str) -> None:
    """Raise RuntimeError unless the robot answers errcode 0."""
    body = json.dumps({"msgtype": "markdown", "markdown": {"content": content}}).encode()
    # main() admits only http(s) URLs.
    request = urllib.request.Request(  # noqa: S310
        robot_url, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=ROBOT_TIMEOUT_S) as answer:  # noqa: S310
            reply = json.loads(answer.read() or b"{}")
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"robot unreachable: {type(exc).__name__}") from None
    if reply.get("errcode") != 0:
        raise RuntimeError(f"robot refused: errcode {reply.get('errcode')} {reply.get('errmsg')}")


class RelayHandler(BaseHTTPRequestHandler):
    robot_url = ""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != PATH or not 0 < length <= MAX_BODY_BYTES:
            self._answer(404 if self.path != PATH else 400, "expected an Alertmanager POST")
            return
        try:
            notification = json.loads(self.rfile.read(length))
            post_to_robot(self.robot_url, markdown(notification))
        except ValueError:
            self._answer(400, "not JSON")
        except RuntimeError as exc:
            _log.warning("not relayed: %s", exc)
            self._answer(502, str(exc))
        else:
            self._answer(200, "relayed")

    def _answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        _log.info("%s %s", self.address_string(), format % args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104  # a container's relay
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    robot_url = os.environ.get("WECOM_ROBOT_URL", "")
    if not robot_url.startswith(("https://", "http://")):
        print("set WECOM_ROBOT_URL to the robot's webhook URL", file=sys.stderr)
        return 2
    RelayHandler.robot_url = robot_url
    server = ThreadingHTTPServer((args.host, args.port), RelayHandler)
    _log.info("relaying %s on %s:%d to the WeCom robot", PATH, args.host, server.server_port)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
