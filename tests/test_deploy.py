"""The deployment files stay well-formed, name the real commands and settings, and work.

No Docker engine or cluster runs here, so deploy/compose.yaml and deploy/k8s/*.yaml
are parsed and held to what an operator relies on: the services and kinds, the
roles they run, probes on the server port, resources, a non-root read-only pod,
secrets only in the Secret. Their configuration is loaded with the real Settings,
and the commands and probes they name are run as real `wxgate` processes on Redis.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import redis
import yaml
from pydantic import BaseModel, ValidationError

from tests.conftest import free_port
from wxgate.config import (
    DeliverySettings,
    ServerSettings,
    Settings,
    check,
    hash_api_key,
    load_settings,
)
from wxgate.sandbox.config import load_accounts

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
EXAMPLE = DEPLOY / "wxgate.example.toml"
CONFIG_PATH = "/etc/wxgate/wxgate.toml"
SECRET_SETTINGS = ("secret", "callback_token", "encoding_aes_key")
WXGATE = Path(sys.executable).with_name("wxgate")
REDIS_URL = "redis://127.0.0.1:6379/0"
START_DEADLINE_S = 60.0


# -- reading the files ------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _instructions(keyword: str) -> list[str]:
    return [rest for kw, rest in _dockerfile() if kw == keyword]


def _exec_form(rest: str) -> list[str]:
    return json.loads(rest[rest.index("[") :])


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _k8s_documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def _k8s(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _secret_env() -> dict[str, str]:
    return dict(_k8s("Secret", "wxgate-secrets")["stringData"])


def _configmap_toml() -> str:
    return _k8s("ConfigMap", "wxgate-config")["data"]["wxgate.toml"]


_COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: str, shell: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, as `docker compose` expands them."""

    def expand(match: re.Match[str]) -> str:
        name, operator, word = match.groups()
        current = shell.get(name)
        # With a colon, an empty value counts as unset; without one, only absence does.
        if current or (current is not None and operator in ("-", "?")):
            return current
        if operator in (":-", "-"):
            return word
        if operator in (":?", "?"):
            raise KeyError(f"{name} is required: {word}")
        return ""

    return _COMPOSE_VARIABLE.sub(expand, value)


def _duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text))


# -- loading settings as the containers would -------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No WXGATE_* variable of the test runner leaks into the settings under test."""
    for name in list(os.environ):
        if name.startswith("WXGATE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _load(toml_text: str, env: dict[str, str], tmp_path: Path, mp: pytest.MonkeyPatch) -> Settings:
    path = tmp_path / "wxgate.toml"
    path.write_text(toml_text)
    for name, value in env.items():
        mp.setenv(name, value)
    return load_settings(path)


def _field_path_exists(variable: str, apps: set[str]) -> bool:
    """Whether WXGATE_A__B__C names a setting (apps.<name> must be an app of the file)."""
    model: Any = Settings
    parts = variable.removeprefix("WXGATE_").lower().split("__")
    while parts:
        field = model.model_fields.get(parts.pop(0))
        if field is None:
            return False
        annotation = field.annotation
        if get_origin(annotation) is dict:
            if not parts or parts.pop(0) not in apps:
                return False
            annotation = get_args(annotation)[1]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return not parts
    return False


# -- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_builds_on_python_311_slim_in_two_stages() -> None:
    stages = _instructions("FROM")
    assert len(stages) >= 2
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in _dockerfile()
    assert all(stage.startswith("${PYTHON_IMAGE}") for stage in stages)
    assert any(rest.startswith("--from=build /opt/wxgate") for rest in _instructions("COPY"))


def test_dockerfile_installs_the_package_from_the_repository() -> None:
    copies = " ".join(_instructions("COPY"))
    assert "pyproject.toml" in copies and "wxgate ./wxgate" in copies
    assert any(re.search(r"pip install \.(\s|$)", rest) for rest in _instructions("RUN"))


def test_dockerfile_runs_as_a_fixed_non_root_user() -> None:
    user = _instructions("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    assert f"--uid {uid}" in " ".join(_instructions("RUN"))


def test_dockerfile_exposes_the_server_port_and_runs_serve_by_default() -> None:
    assert _instructions("EXPOSE") == [str(ServerSettings().port)]
    assert _exec_form(_instructions("ENTRYPOINT")[0]) == ["wxgate"]
    assert _exec_form(_instructions("CMD")[-1]) == ["serve", "--config", CONFIG_PATH]


def _healthcheck_argv() -> list[str]:
    (healthcheck,) = _instructions("HEALTHCHECK")
    argv = _exec_form(healthcheck.partition(" CMD ")[2])
    assert argv[0] == "python", "the slim image has no curl"
    return [sys.executable, *argv[1:]]


def test_dockerfile_healthcheck_fails_when_nothing_answers() -> None:
    env = os.environ | {"WXGATE_SERVER__PORT": str(free_port())}
    assert subprocess.run(_healthcheck_argv(), env=env, capture_output=True).returncode != 0


# -- compose ----------------------------------------------------------------------------------


def _serve_services(role: str) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in _compose()["services"].items()
        if service.get("command") == ["serve", "--config", CONFIG_PATH, "--role", role]
    }


def _replicas(services: dict[str, dict[str, Any]]) -> int:
    return sum(service.get("deploy", {}).get("replicas", 1) for service in services.values())


def test_compose_runs_redis_two_api_processes_two_workers_and_the_sandbox() -> None:
    services = _compose()["services"]
    assert _replicas(_serve_services("api")) == 2
    assert _replicas(_serve_services("worker")) == 2
    assert services["sandbox"]["command"][0] == "sandbox"
    # The image's HEALTHCHECK asks a gateway's /healthz, which the sandbox does not serve.
    assert "/sandbox/stats" in " ".join(services["sandbox"]["healthcheck"]["test"])
    assert services["redis"]["image"].startswith("redis:")


def test_compose_api_processes_publish_distinct_loopback_ports() -> None:
    ports = [p for s in _serve_services("api").values() for p in s["ports"]]
    assert len(set(ports)) == len(ports) == 2
    assert all(p.startswith("127.0.0.1:") and p.endswith(":8000") for p in ports)


def test_compose_redis_appends_every_write_fsyncs_each_second_and_never_evicts() -> None:
    redis_service = _compose()["services"]["redis"]
    command = " ".join(redis_service["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    volume, _, target = redis_service["volumes"][0].partition(":")
    assert target == "/data" and volume in _compose()["volumes"]
    assert "redis-cli" in redis_service["healthcheck"]["test"]


def test_compose_gateways_wait_for_a_healthy_redis_and_mount_the_example_config() -> None:
    for service in (_serve_services("api") | _serve_services("worker")).values():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert f"./{EXAMPLE.name}:{CONFIG_PATH}:ro" in service["volumes"]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]


def _compose_gateway_env(shell: dict[str, str]) -> dict[str, str]:
    (service, *_) = _serve_services("api").values()
    return {name: _interpolate(str(value), shell) for name, value in service["environment"].items()}


def test_compose_requires_api_key_hashes_from_the_environment() -> None:
    with pytest.raises(KeyError, match="WXGATE_SERVER__API_KEYS"):
        _compose_gateway_env({})


def test_compose_environment_completes_the_example_config(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shell = {"WXGATE_SERVER__API_KEYS": f'["sha256:{"ab" * 32}"]'}
    settings = _load(EXAMPLE.read_text(), _compose_gateway_env(shell), tmp_path, clean_env)
    assert sorted(settings.apps) == ["club", "shop"]
    # The only objection: the sandbox is plain http on the compose network.
    assert check(settings) == [
        f"apps.{name}.api_base: plain http outside loopback (WeChat needs https)"
        for name in settings.apps
    ]


def test_compose_sandbox_knows_each_app_and_reports_to_the_api_alias(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shell = {"WXGATE_SERVER__API_KEYS": f'["sha256:{"ab" * 32}"]'}
    settings = _load(EXAMPLE.read_text(), _compose_gateway_env(shell), tmp_path, clean_env)
    accounts_file = tmp_path / "sandbox.toml"
    accounts_file.write_text(_compose()["configs"]["sandbox-accounts"]["content"])
    accounts = {account.appid: account for account in load_accounts(accounts_file)}
    aliases = _serve_services("api")["api-1"]["networks"]["default"]["aliases"]
    for name, app in settings.apps.items():
        account = accounts[app.appid]
        assert account.secret == app.secret.get_secret_value()
        assert account.callback_token == app.callback_token.get_secret_value()
        assert account.callback_url == f"http://{aliases[0]}:8000/wechat/callback/{name}"
        if account.callback_mode == "safe":
            assert account.encoding_aes_key == app.encoding_aes_key.get_secret_value()


def test_compose_stop_grace_outlasts_the_http_and_worker_drains() -> None:
    grace = DeliverySettings().shutdown_grace_s
    example_grace = tomllib.loads(EXAMPLE.read_text())["delivery"]["shutdown_grace_s"]
    for service in (_serve_services("api") | _serve_services("worker")).values():
        assert _duration_s(service["stop_grace_period"]) > 2 * max(grace, example_grace)


# -- Kubernetes -------------------------------------------------------------------------------


def test_k8s_manifests_hold_configmap_secret_deployments_and_service() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _k8s_documents()}
    assert {
        ("ConfigMap", "wxgate-config"),
        ("Secret", "wxgate-secrets"),
        ("Deployment", "wxgate-api"),
        ("Deployment", "wxgate-worker"),
        ("Service", "wxgate-api"),
    } <= kinds
    assert all("namespace" not in d["metadata"] for d in _k8s_documents())


@pytest.mark.parametrize("role", ["api", "worker"])
def test_k8s_deployment_serves_its_role_with_two_replicas(role: str) -> None:
    deployment = _k8s("Deployment", f"wxgate-{role}")
    container = _container(deployment)
    assert deployment["spec"]["replicas"] == 2
    assert "command" not in container, "the image's ENTRYPOINT is wxgate"
    assert container["args"] == ["serve", "--config", CONFIG_PATH, "--role", role]
    assert container["envFrom"] == [{"secretRef": {"name": "wxgate-secrets"}}]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert mounts["config"] == str(Path(CONFIG_PATH).parent)
    assert volumes["config"]["configMap"]["name"] == "wxgate-config"


@pytest.mark.parametrize("role", ["api", "worker"])
def test_k8s_probes_ask_healthz_and_readyz_on_the_server_port(role: str) -> None:
    container = _container(_k8s("Deployment", f"wxgate-{role}"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    server_port = tomllib.loads(_configmap_toml())["server"]["port"]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == server_port


@pytest.mark.parametrize("role", ["api", "worker"])
def test_k8s_containers_request_and_limit_cpu_and_memory(role: str) -> None:
    resources = _container(_k8s("Deployment", f"wxgate-{role}"))["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) >= {"cpu", "memory"}


@pytest.mark.parametrize("role", ["api", "worker"])
def test_k8s_pods_run_as_the_image_user_on_a_read_only_root(role: str) -> None:
    pod = _k8s("Deployment", f"wxgate-{role}")["spec"]["template"]["spec"]
    container = _container(_k8s("Deployment", f"wxgate-{role}"))
    uid = int(_instructions("USER")[-1].partition(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def _prestop_s(container: dict[str, Any]) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    return float(command[1]) if command and command[0] == "sleep" else 0.0


@pytest.mark.parametrize("role", ["api", "worker"])
def test_k8s_termination_grace_outlasts_prestop_and_both_drains(role: str) -> None:
    deployment = _k8s("Deployment", f"wxgate-{role}")
    grace = tomllib.loads(_configmap_toml())["delivery"]["shutdown_grace_s"]
    needed = _prestop_s(_container(deployment)) + 2 * grace
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > needed


def test_k8s_service_sends_port_8000_to_api_pods_only() -> None:
    service = _k8s("Service", "wxgate-api")
    selector = service["spec"]["selector"].items()
    api_labels = _k8s("Deployment", "wxgate-api")["spec"]["template"]["metadata"]["labels"]
    worker_labels = _k8s("Deployment", "wxgate-worker")["spec"]["template"]["metadata"]["labels"]
    assert selector <= api_labels.items()
    assert not selector <= worker_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 8000 and port["targetPort"] == "http"


def test_k8s_configmap_carries_the_example_config() -> None:
    assert tomllib.loads(_configmap_toml()) == tomllib.loads(EXAMPLE.read_text())


def test_k8s_configmap_holds_no_secret() -> None:
    document = tomllib.loads(_configmap_toml())
    assert document["server"]["api_keys"] == []
    for app in document["apps"].values():
        assert not set(SECRET_SETTINGS) & set(app)
    for value in _secret_env().values():
        assert value not in _configmap_toml()


def test_k8s_secret_names_only_real_settings() -> None:
    apps = set(tomllib.loads(_configmap_toml())["apps"])
    for name in _secret_env():
        assert _field_path_exists(name, apps), name
    assert not _field_path_exists("WXGATE_APPS__SHOP__SECRTE", apps)


def test_k8s_secret_holds_every_secret_of_every_app() -> None:
    apps = tomllib.loads(_configmap_toml())["apps"]
    expected = {
        f"WXGATE_APPS__{app.upper()}__{key.upper()}" for app in apps for key in SECRET_SETTINGS
    }
    assert expected | {"WXGATE_SERVER__API_KEYS"} <= set(_secret_env())


def test_k8s_secret_completes_the_configmap_into_a_config_that_passes_check(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = _load(_configmap_toml(), _secret_env(), tmp_path, clean_env)
    assert check(settings) == []
    assert settings.storage.redis_url == _secret_env()["WXGATE_STORAGE__REDIS_URL"]


# -- the example config -----------------------------------------------------------------------


def test_example_config_lacks_only_the_app_secrets_it_documents(
    clean_env: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError) as caught:
        load_settings(EXAMPLE)
    apps = tomllib.loads(EXAMPLE.read_text())["apps"]
    assert {error["loc"] for error in caught.value.errors()} == {("apps", a) for a in apps}
    assert all("secret is required" in error["msg"] for error in caught.value.errors())


def test_example_config_documents_every_variable_the_secret_sets() -> None:
    documented = set(re.findall(r"^#\s+(WXGATE_\w+)", EXAMPLE.read_text(), re.MULTILINE))
    assert documented == set(_secret_env())


# -- the commands the manifests name, run for real --------------------------------------------


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    ready_after_s: float

    def get(self, path: str, headers: dict[str, str] | None = None) -> int:
        url = f"http://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=15) as r:  # noqa: S310
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def stop(self) -> tuple[int, float]:
        """SIGTERM, as Kubernetes and Docker send it; (exit status, seconds to exit)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=60)
        return status, time.monotonic() - started


def _wait_ready(gateway: Gateway) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            output = gateway.process.stdout.read().decode() if gateway.process.stdout else ""
            raise AssertionError(f"gateway exited {gateway.process.returncode}:\n{output[-3000:]}")
        try:
            if gateway.get("/readyz") == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("gateway not ready in time")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the local Redis, deleted afterwards."""
    prefix = f"wxgate-deploy-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def start_pod(tmp_path: Path, redis_prefix: str) -> Iterator[Any]:
    """Run a Deployment's container as the pod would: its args, the ConfigMap file at the
    config path, the Secret as environment; only the addresses point at this host."""
    started: list[Gateway] = []

    def start(role: str, **extra_env: str) -> Gateway:
        container = _container(_k8s("Deployment", f"wxgate-{role}"))
        config = tmp_path / f"{role}-wxgate.toml"
        config.write_text(_configmap_toml())
        args = [str(config) if arg == CONFIG_PATH else arg for arg in container["args"]]
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WXGATE_")}
        env |= (
            _secret_env()
            | {
                "WXGATE_SERVER__HOST": "127.0.0.1",
                "WXGATE_SERVER__PORT": str(port),
                "WXGATE_SERVER__WORKER_PORT": str(port),
                "WXGATE_STORAGE__REDIS_URL": REDIS_URL,
                "WXGATE_STORAGE__REDIS_PREFIX": redis_prefix,
                # Nothing answers here: no send leaves this host.
                "WXGATE_APPS__SHOP__API_BASE": f"http://127.0.0.1:{free_port()}",
                "WXGATE_APPS__CLUB__API_BASE": f"http://127.0.0.1:{free_port()}",
            }
            | extra_env
        )
        began = time.monotonic()
        process = subprocess.Popen(
            [str(WXGATE), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        gateway = Gateway(process, port, 0.0)
        started.append(gateway)
        _wait_ready(gateway)
        gateway.ready_after_s = time.monotonic() - began
        return gateway

    yield start
    for gateway in started:
        if gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.wait()
        if gateway.process.stdout:
            gateway.process.stdout.close()


@pytest.mark.parametrize("role", ["api", "worker"])
def test_k8s_container_args_start_a_gateway_whose_probes_pass(role: str, start_pod: Any) -> None:
    container = _container(_k8s("Deployment", f"wxgate-{role}"))
    gateway = start_pod(role)
    assert gateway.get(container["livenessProbe"]["httpGet"]["path"]) == 200
    assert gateway.get(container["readinessProbe"]["httpGet"]["path"]) == 200
    # WeChat's callbacks reach the api role, which checks them with the Secret's
    # callback token and refuses a forged one; a worker has no such route.
    forged = f"/wechat/callback/shop?signature=0&timestamp={int(time.time())}&nonce=1&echostr=2"
    assert gateway.get(forged) == (403 if role == "api" else 404)


def test_dockerfile_healthcheck_passes_against_a_running_gateway(start_pod: Any) -> None:
    gateway = start_pod("api")
    env = os.environ | {"WXGATE_SERVER__PORT": str(gateway.port)}
    result = subprocess.run(_healthcheck_argv(), env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.parametrize("role", ["api", "worker"])
def test_sigterm_stops_a_pod_cleanly_within_its_termination_grace(
    role: str, start_pod: Any
) -> None:
    deployment = _k8s("Deployment", f"wxgate-{role}")
    budget = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    budget -= _prestop_s(_container(deployment))
    gateway = start_pod(role)
    status, took_s = gateway.stop()
    assert status == 0
    assert took_s < budget


def test_pod_output_holds_no_value_of_the_secret(start_pod: Any) -> None:
    gateway = start_pod("api")
    forged = f"/wechat/callback/club?signature=0&timestamp={int(time.time())}&nonce=1&echostr=2"
    assert gateway.get(forged) == 403
    assert gateway.stop()[0] == 0
    assert gateway.process.stdout is not None
    output = gateway.process.stdout.read().decode()
    assert "gateway stopped" in output
    for name, value in _secret_env().items():
        assert value not in output, name


# -- Prometheus ---------------------------------------------------------------------------------

PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"


def _keyed_wxgate_job() -> dict[str, Any]:
    """The `wxgate` scrape job of prometheus.yml with its commented `authorization`
    block uncommented, as docs/deployment.md tells an operator who closes /metrics."""
    lines = PROMETHEUS.read_text().splitlines()
    [start] = [n for n, line in enumerate(lines) if line.strip() == "# authorization:"]
    indent = lines[start].index("#")
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith(" " * indent + "#   "):
            break
        block.append(line)
    uncommented = [line[:indent] + line[indent + 2 :] for line in block]
    config = yaml.safe_load("\n".join(lines[:start] + uncommented + lines[start + len(block) :]))
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "wxgate"]
    return dict(job)


def test_prometheus_job_has_an_authorization_block_to_uncomment() -> None:
    job = _keyed_wxgate_job()
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"].startswith("/etc/prometheus/")


@pytest.mark.parametrize("role", ["api", "worker"])
def test_metrics_require_key_refuses_a_keyless_scrape_and_takes_the_jobs_key(
    role: str, start_pod: Any, tmp_path: Path
) -> None:
    # The key the operator gives Prometheus: its hash in the gateway's keys, the key
    # itself in the file the scrape job reads, sent as that job's authorization says.
    key = "wxg_prometheus-scrape-key-7d0c1e"
    credentials = tmp_path / "wxgate-api-key"
    credentials.write_text(key + "\n")
    job = _keyed_wxgate_job()
    scheme = job["authorization"]["type"]
    gateway = start_pod(
        role,
        WXGATE_SERVER__METRICS_REQUIRE_KEY="true",
        WXGATE_SERVER__API_KEYS=json.dumps([hash_api_key(key)]),
    )

    keyless = gateway.get(job["metrics_path"])
    keyed = gateway.get(
        job["metrics_path"], {"Authorization": f"{scheme} {credentials.read_text().strip()}"}
    )

    assert (keyless, keyed) == (401, 200)
