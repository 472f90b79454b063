"""/v1/suppressions and /v1/templates: what they refuse, naming the field."""

from __future__ import annotations

from .conftest import Gateway


async def test_an_import_with_a_bad_openid_stores_nothing_and_names_it(gateway: Gateway) -> None:
    body = {"app": "default", "openids": ["oGOOD", "has space"]}
    status, answer, _ = await gateway.post("/v1/suppressions", body)
    assert status == 400
    assert [e["loc"] for e in answer["data"]["errors"]] == [["body", "openids", 1]]
    assert await gateway.backend.suppression_store().find("default", ["oGOOD"]) == {}


async def test_an_import_with_an_unknown_reason_is_refused(gateway: Gateway) -> None:
    body = {"app": "default", "openids": ["oA"], "reason": "because"}
    status, answer, _ = await gateway.post("/v1/suppressions", body)
    assert status == 400
    assert answer["data"]["errors"][0]["loc"] == ["body", "reason"]


async def test_an_unknown_app_is_named_in_the_query(gateway: Gateway) -> None:
    for path in ("/v1/suppressions?app=nope", "/v1/templates?app=nope"):
        status, answer, _ = await gateway.get(path)
        assert status == 400, path
        assert answer["data"]["errors"][0]["loc"] == ["query", "app"]


async def test_lifting_an_openid_not_listed_is_a_404(gateway: Gateway) -> None:
    status, _, _ = await gateway.request("DELETE", "/v1/suppressions/default/oNOBODY")
    assert status == 404
    status, _, _ = await gateway.request("DELETE", "/v1/suppressions/nope/oNOBODY")
    assert status == 404


async def test_the_routes_need_an_api_key(gateway: Gateway) -> None:
    for path in ("/v1/suppressions?app=default", "/v1/templates?app=default"):
        status, _, _ = await gateway.get(path, key=None)
        assert status == 401, path
