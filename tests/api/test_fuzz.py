"""Generated requests for every documented operation never get a 500.

Schemathesis reads /openapi.json from a real server (uvicorn in a thread, over a
real SQLite file) and sends valid and invalid requests built from the schema.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error

from tests.conftest import free_port
from wxgate.api.app import create_app
from wxgate.backends.sqlite import SqliteBackend
from wxgate.observability import Metrics

from .conftest import API_KEY, make_settings

ANSWER_TIMEOUT_S = 60.0  # per request: generous, an answer comes as soon as it is ready


class ThreadedGateway:
    """The API served in a thread of its own, with its own event loop."""

    def __init__(self, db_path: Path) -> None:
        self.port = free_port()
        self._db_path = db_path
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        backend = SqliteBackend(self._db_path)
        await backend.start()
        app = create_app(make_settings(), backend, metrics=Metrics())
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        try:
            await self._server.serve()
        finally:
            await backend.close()

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 30.0  # seconds at most, even on a busy machine
        while time.monotonic() < deadline:
            if self._server is not None and self._server.started:
                return f"http://127.0.0.1:{self.port}"
            self._thread.join(0.01)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    with ThreadedGateway(tmp_path_factory.mktemp("fuzz") / "fuzz.db") as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def operations(schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


# Driven by hand rather than by schemathesis' pytest plugin, which does not run on
# the pytest of this project (it reads a private attribute pytest 9 removed).
@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
def test_no_generated_request_gets_a_500(
    api_schema: schemathesis.BaseSchema, mode: schemathesis.GenerationMode
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    checked = []
    for operation in operations(api_schema):

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def never_a_server_error(case: schemathesis.Case) -> None:
            # schemathesis gives up on an answer after 10 s; a busy machine can take that.
            response = case.call(headers=headers, timeout=ANSWER_TIMEOUT_S)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            never_a_server_error()
        except Unsatisfiable:
            assert mode is schemathesis.GenerationMode.NEGATIVE  # nothing to get wrong
            continue
        checked.append(operation.label)
    bodies = {"POST /v1/messages", "POST /v1/messages/batch", "POST /v1/dead-letters/replay"}
    assert bodies <= set(checked)  # the intake operations were exercised in both modes
