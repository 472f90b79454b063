"""/healthz, /readyz and /metrics."""

from __future__ import annotations

from .conftest import Gateway, GatewayFactory, message_body


async def test_healthz_is_200_while_the_process_runs(gateway: Gateway) -> None:
    status, body, _ = await gateway.get("/healthz", key=None)
    assert (status, body["code"]) == (200, 0)


async def test_readyz_includes_the_backend_and_the_extra_checks(
    gateway_factory: GatewayFactory,
) -> None:
    async def workers_running() -> dict[str, bool]:
        return {"workers": True}

    gateway = await gateway_factory(readiness=workers_running)
    status, body, _ = await gateway.get("/readyz", key=None)
    assert status == 200
    checks = {"backend": True, "storage_writable": True, "workers": True}
    assert body["data"] == {"ready": True, "checks": checks}


async def test_readyz_is_503_when_an_extra_check_fails(gateway_factory: GatewayFactory) -> None:
    async def workers_stopped() -> dict[str, bool]:
        return {"workers": False}

    gateway = await gateway_factory(readiness=workers_stopped)
    status, body, _ = await gateway.get("/readyz", key=None)
    assert status == 503 and body["code"] == 50300
    assert body["data"]["checks"] == {"backend": True, "storage_writable": True, "workers": False}


async def test_readyz_is_503_when_the_backend_is_gone(gateway: Gateway) -> None:
    await gateway.backend.close()
    status, body, _ = await gateway.get("/readyz", key=None)
    assert status == 503
    assert body["data"]["checks"]["backend"] is False


async def test_healthz_stays_200_when_the_backend_is_gone(gateway: Gateway) -> None:
    await gateway.backend.close()
    assert (await gateway.get("/healthz", key=None))[0] == 200


async def test_metrics_show_queue_depth_and_intake(gateway: Gateway) -> None:
    await gateway.post("/v1/messages", message_body())
    await gateway.post("/v1/messages", message_body(touser="oB"))
    status, text, reply = await gateway.get("/metrics", key=None)
    assert status == 200 and reply.content_type == "text/plain"
    assert 'wxgate_queue_depth{status="queued"} 2.0' in text
    assert 'wxgate_messages_total{app="default",outcome="accepted"} 2.0' in text
    assert 'wxgate_intake_seconds_count{route="messages"} 2.0' in text


async def test_openapi_documents_msgid_as_a_string(gateway: Gateway) -> None:
    _, spec, _ = await gateway.get("/openapi.json", key=None)
    msgid = spec["components"]["schemas"]["MessageOut"]["properties"]["msgid"]
    assert {"type": "string"} in msgid["anyOf"]
    assert "2^53" in msgid["description"]
