"""The demo's second part: what the gateway knows before it sends.

After the table, the demo adds a template to the sandbox account and syncs the
registry, then shows intake refusing a message whose data key the template lacks
(400, the key named), and a message to the recipient the table saw answered 43004
ending `suppressed` at once, without a send at the sandbox.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from rich.console import Console
from rich.markup import escape

from wxgate.api.template_check import REGISTRY_CACHE_S
from wxgate.gateway import Gateway
from wxgate.sandbox.control import SandboxControl

APP = "default"
NOT_FOLLOWING = "unfollowed_heidi"  # answered 43004 in the table
SHIPPED_KEYWORDS = ["订单号", "快递公司", "发货时间"]  # TM00303: character_string1, thing2, time4


async def show_intake_checks(console: Console, gateway: Gateway, base: str, api_key: str) -> bool:
    """Print the refused key and the suppressed recipient; True when both came out so."""
    assert gateway.template_sync is not None
    headers = {"Authorization": f"Bearer {api_key}"}
    client = gateway.clients[APP]
    template_id = await client.add_template("TM00303", SHIPPED_KEYWORDS)
    await gateway.template_sync.sync_app(APP)
    await asyncio.sleep(REGISTRY_CACHE_S)  # until intake reads the registry again
    console.print(f"\nregistry: added TM00303 as {template_id[:12]}… and synced it")
    data = {
        "character_string1": {"value": "SO2026112901"},
        "thing2": {"value": "顺丰速运"},
        "thing9": {"value": "no such key"},
    }
    async with aiohttp.ClientSession() as session:
        status, answer = await _post(session, base, headers, "oAlice_demo", template_id, data)
        refused = status == 400
        for error in answer["data"]["errors"] if refused else []:
            console.print(
                escape(f"  refused 400 at {'.'.join(map(str, error['loc']))}: {error['msg']}")
            )
        suppressed = await _wait_suppressed(session, base, headers)
        async with SandboxControl(gateway.settings.apps[APP].api_base) as control:
            before = (await control.stats())["sends_total"]
            good = {k: v for k, v in data.items() if k != "thing9"}
            good["time4"] = {"value": "2026-11-29 10:30"}
            status, answer = await _post(session, base, headers, NOT_FOLLOWING, template_id, good)
            after = (await control.stats())["sends_total"]
    ended = answer.get("data", {}).get("status")
    console.print(
        escape(
            f"suppression: {NOT_FOLLOWING} (43004 above) -> HTTP {status}, {ended}; "
            f"sandbox sends {before} -> {after}"
        )
    )
    return refused and suppressed and ended == "suppressed" and before == after


async def _post(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    touser: str,
    template_id: str,
    data: dict[str, dict[str, str]],
) -> tuple[int, Any]:
    body = {"app": APP, "touser": touser, "template_id": template_id, "data": data}
    async with session.post(f"{base}/v1/messages", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def _wait_suppressed(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str]
) -> bool:
    """The worker records a 43004 on a task of its own: wait for it (a few seconds)."""
    url = f"{base}/v1/suppressions?app={APP}&touser={NOT_FOLLOWING}"
    for _ in range(50):
        async with session.get(url, headers=headers) as resp:
            if (await resp.json())["data"]["items"]:
                return True
        await asyncio.sleep(0.1)
    return False
