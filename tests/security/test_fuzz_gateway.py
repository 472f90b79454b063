"""Schemathesis against the OpenAPI schema of a running `wxgate serve` process: a few
thousand generated requests, valid and invalid, across every documented operation.

No answer is a 500, and every JSON answer is the envelope: exactly `code`, `msg` and
`data`, `code` 0 on success and the HTTP status times 100 otherwise. Only the
operations documented as text (metrics, WeChat's callback URL) answer otherwise.

tests/api/test_fuzz.py runs a small version in-process; this one talks to the real
process and checks the envelope as well.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from .conftest import API_KEY, Deployment, Process

# Examples per operation and generation mode: at 50, about 1,000 requests in all
# (operations with few distinct inputs run out of new ones early). `make chaos` runs
# this module with more, and WXGATE_FUZZ_REPORT names a file for the figures.
EXAMPLES = int(os.environ.get("WXGATE_FUZZ_EXAMPLES", "50"))
REPORT = os.environ.get("WXGATE_FUZZ_REPORT")
TEXT_ANSWERS = {"GET /metrics", "GET /wechat/callback/{app}", "POST /wechat/callback/{app}"}
ANSWER_TIMEOUT_S = 60.0  # per request: generous, an answer comes as soon as it is ready


@pytest.fixture(scope="module")
def fuzzed(deployment: Deployment) -> Iterator[tuple[Process, str]]:
    """A gateway of its own (HTTP only, its own SQLite file), so the generated messages
    stay out of the other tests' way."""
    process, url = deployment.start_gateway(
        "fuzzed", (API_KEY,), role="api", db=deployment.workdir / "fuzzed.db",
        rate_limit_per_key_per_s=100000, rate_limit_burst=100000,
    )  # fmt: skip
    try:
        yield process, url
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def quiet_client_log() -> Iterator[None]:
    """The test client's own request lines stay out of the log: hypothesis draws strings
    from constants of the loaded code (the sandbox's default secret among them), and
    urllib3 would log the generated URLs at DEBUG, which the session's leak check
    would take for the gateway leaking them."""
    client = logging.getLogger("urllib3")
    level = client.level
    client.setLevel(logging.INFO)
    yield
    client.setLevel(level)


def envelope_problem(label: str, response: schemathesis.Response) -> str | None:
    """What is wrong with an answer's shape, or None."""
    if response.status_code >= 500 and response.status_code != 503:
        return f"HTTP {response.status_code}"
    content_type = ";".join(response.headers.get("content-type", []))
    if label in TEXT_ANSWERS and not content_type.startswith("application/json"):
        return None
    try:
        body: Any = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return f"not JSON: {response.content[:100]!r}"
    if not isinstance(body, dict) or set(body) != {"code", "msg", "data"}:
        return f"not the envelope: {str(body)[:100]}"
    expected = 0 if response.status_code < 300 else response.status_code * 100
    if body["code"] != expected or not isinstance(body["msg"], str):
        return f"code {body['code']} with HTTP {response.status_code}"
    return None


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
def test_generated_requests_get_no_500_and_always_the_envelope(
    fuzzed: tuple[Process, str], mode: schemathesis.GenerationMode
) -> None:
    process, url = fuzzed
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answered_in_the_envelope(case: schemathesis.Case) -> None:
            # schemathesis gives up on an answer after 10 s; a busy machine can take that.
            response = case.call(headers=headers, timeout=ANSWER_TIMEOUT_S)
            statuses[response.status_code] += 1
            problem = envelope_problem(case.operation.label, response)
            if problem is not None:
                problems.append(f"{case.operation.label}: {problem}")

        try:
            answered_in_the_envelope()
        except Unsatisfiable:
            assert mode is schemathesis.GenerationMode.NEGATIVE  # nothing to get wrong
    if REPORT:
        with open(REPORT, "a") as report:
            report.write(
                f"{mode.value} {sum(statuses.values())} {dict(sorted(statuses.items()))}\n"
            )
    assert process.alive()
    assert problems == []
    assert statuses[500] == 0
    assert sum(statuses.values()) >= EXAMPLES * 5  # the fuzzing really ran
