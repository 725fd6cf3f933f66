"""The deployment files agree with each other and with the CLI.

`deploy/Dockerfile`, `deploy/compose.yaml` and `deploy/k8s/` name the same image, port,
commands, probes and secrets; a change to one that the others miss fails here, in
seconds, before the container CI step (`deploy/ci-container.sh`) finds it by running them.
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import build_parser
from app.collector.listener import MIN_QUEUE_LENGTH

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined.

    The whole grammar these checks need; a parser library would add a dependency for it.
    """
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        pending = ""
        instructions.append((keyword.upper(), args.strip()))
    return instructions


DOCKERFILE = dockerfile_instructions((DEPLOY / "Dockerfile").read_text())
COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
KUSTOMIZATION: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
K8S_DOCS: list[dict[str, Any]] = [
    doc
    for name in KUSTOMIZATION["resources"]
    for doc in yaml.safe_load_all((K8S / name).read_text())
    if doc
]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"tlsrpt-service:{VERSION}"


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions after the last FROM: what the shipped image is made of."""
    last = max(i for i, (keyword, _) in enumerate(DOCKERFILE) if keyword == "FROM")
    return DOCKERFILE[last:]


def instruction(keyword: str) -> str:
    found = [args for kw, args in runtime_stage() if kw == keyword]
    assert len(found) == 1, f"the runtime stage needs exactly one {keyword}, has {found}"
    return found[0]


def image_port() -> int:
    return int(instruction("EXPOSE").split("/")[0])


def image_cmd() -> list[str]:
    cmd = json.loads(instruction("CMD"))  # exec form: JSON, or json.loads fails
    assert isinstance(cmd, list)
    return cmd


def image_uid() -> int:
    return int(instruction("USER").split(":")[0])


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in K8S_DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"deploy/k8s needs one {kind} {name}"
    return found[0]


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = k8s_object(kind, name)["spec"]["template"]["spec"]
    return spec


WORKLOADS = [
    ("Deployment", "tlsrpt-api"),
    ("Deployment", "tlsrpt-worker"),
    ("Job", "tlsrpt-migrate"),
]


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_is_multi_stage_on_the_official_slim_python() -> None:
    bases = [args.split()[0] for kw, args in DOCKERFILE if kw == "FROM"]
    assert len(bases) >= 2
    assert all(re.fullmatch(r"python:3\.1[2-9]-slim", base) for base in bases), bases


def test_image_runs_as_a_non_root_numeric_user() -> None:
    user = instruction("USER")
    assert re.fullmatch(r"[0-9]+:[0-9]+", user), "numeric uid:gid lets k8s check runAsNonRoot"
    assert image_uid() != 0


def test_default_command_is_serve_in_exec_form_on_the_exposed_port() -> None:
    assert image_cmd() == ["tlsrpt", "serve", "--host", "0.0.0.0", "--port", str(image_port())]
    # An ENTRYPOINT would be prepended to compose/k8s commands, and its shell form would
    # keep SIGTERM from the server.
    assert not [kw for kw, _ in DOCKERFILE if kw == "ENTRYPOINT"]


def test_healthcheck_asks_healthz_on_the_exposed_port_without_a_shell() -> None:
    check = instruction("HEALTHCHECK")
    assert "CMD [" in check
    assert f"http://127.0.0.1:{image_port()}/healthz" in check


def test_app_is_installed_without_dev_dependencies_and_no_config_is_baked_in() -> None:
    runs = " ".join(args for kw, args in DOCKERFILE if kw == "RUN")
    assert re.search(r"pip install (--no-deps )?\.(\s|$)", runs)
    assert "[dev]" not in runs and " -e " not in runs
    envs = " ".join(args for kw, args in DOCKERFILE if kw in {"ENV", "ARG"})
    assert not re.search(r"PASSWORD|SECRET|TOKEN|DATABASE_URL", envs)


def test_dockerignore_lets_only_the_package_sources_in() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list keeps deploy/.env and local files out"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed <= {"pyproject.toml", "README.md", "app", "alembic"}
    copied = {args.split()[0] for kw, args in DOCKERFILE if kw == "COPY" and "--from" not in args}
    assert copied <= allowed, "COPY of a file the context does not contain"


# ---------------------------------------------------------------- compose


def service(name: str) -> dict[str, Any]:
    svc: dict[str, Any] = COMPOSE["services"][name]
    return svc


def test_compose_app_services_use_the_image_built_from_the_dockerfile() -> None:
    for name in ("migrate", "api", "worker"):
        svc = service(name)
        assert svc["image"] == IMAGE, f"{name}: the image tag follows pyproject's version"
        context = (DEPLOY / svc["build"]["context"]).resolve()
        assert context == ROOT
        assert (context / svc["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_compose_commands_match_the_image() -> None:
    assert service("api")["command"] == image_cmd()
    assert service("migrate")["command"] == ["tlsrpt", "migrate"]
    assert service("migrate")["restart"] == "no"
    assert service("worker")["command"] == ["tlsrpt", "worker"]


def test_compose_publishes_the_api_on_loopback_only() -> None:
    ports = service("api")["ports"]
    assert ports
    for mapping in ports:
        host, _, container = str(mapping).rpartition(":")
        assert host.startswith("127.0.0.1:"), mapping
        assert int(container) == image_port()
    for name in ("postgres", "migrate", "worker"):
        assert "ports" not in service(name), f"{name} must not be published"


def test_compose_postgres_is_official_with_a_named_volume_and_a_healthcheck() -> None:
    pg = service("postgres")
    assert re.fullmatch(r"postgres:[0-9]+", pg["image"])
    volume = pg["volumes"][0].split(":")[0]
    assert volume in COMPOSE["volumes"], "a named volume keeps the data across re-creation"
    assert "pg_isready" in pg["healthcheck"]["test"]
    assert service("migrate")["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        condition = service(name)["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"


def test_compose_secrets_come_from_the_uncommitted_env_file() -> None:
    password = "${POSTGRES_PASSWORD:?"
    assert service("postgres")["environment"]["POSTGRES_PASSWORD"].startswith(password)
    for name in ("migrate", "api", "worker"):
        url = service(name)["environment"]["TLSRPT_DATABASE_URL"]
        assert password in url, "no literal password in the committed file"
        assert url.endswith("@postgres:5432/tlsrpt"), "the database by its service name"
        assert service(name)["env_file"] == ["${DEPLOY_ENV_FILE:-.env}"]
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().splitlines()
    example = (DEPLOY / ".env.example").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=", example, re.MULTILINE)


# ---------------------------------------------------------------- Kubernetes


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(KUSTOMIZATION["resources"]) == on_disk


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_k8s_workloads_run_the_image_as_its_user_with_resources(kind: str, name: str) -> None:
    spec = pod_spec(kind, name)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == image_uid()
    (container,) = spec["containers"]
    assert container["image"] == IMAGE
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_k8s_workloads_read_the_database_url_from_the_secret(kind: str, name: str) -> None:
    (container,) = pod_spec(kind, name)["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["TLSRPT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert ref["name"] == example["metadata"]["name"]
    assert ref["key"] in example["stringData"]
    (config,) = container["envFrom"]
    assert k8s_object("ConfigMap", config["configMapRef"]["name"])


def test_k8s_commands_match_compose() -> None:
    (api,) = pod_spec("Deployment", "tlsrpt-api")["containers"]
    (worker,) = pod_spec("Deployment", "tlsrpt-worker")["containers"]
    (migrate,) = pod_spec("Job", "tlsrpt-migrate")["containers"]
    assert api["command"] == service("api")["command"]
    assert worker["command"] == service("worker")["command"]
    assert migrate["command"] == service("migrate")["command"]


def test_k8s_api_probes_and_service_reach_the_image_port() -> None:
    (api,) = pod_spec("Deployment", "tlsrpt-api")["containers"]
    (port,) = api["ports"]
    assert port["containerPort"] == image_port()
    probes = {kind: api[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["port"] in (port["name"], port["containerPort"])
    svc = k8s_object("Service", "tlsrpt-api")
    (target,) = svc["spec"]["ports"]
    assert target["targetPort"] in (port["name"], port["containerPort"])
    pod_labels = k8s_object("Deployment", "tlsrpt-api")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


# ---------------------------------------------------------------- the CLI


def registered_commands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def test_every_deployed_command_is_a_real_cli_command() -> None:
    parser = build_parser()
    registered = registered_commands(parser)
    commands = [image_cmd()] + [service(n)["command"] for n in ("migrate", "api", "worker")]
    for command in commands:
        assert command[0] == "tlsrpt"
        if command[1] == "worker" and "worker" not in registered:
            # `tlsrpt worker` arrives with the delivery issue; from then on it is parsed too.
            continue
        args = parser.parse_args(command[1:])
        assert args.command == command[1]
    serve = parser.parse_args(image_cmd()[1:])
    assert (serve.host, serve.port) == ("0.0.0.0", image_port())


# ---------------------------------------------------------------- the collector

COLLECTOR_K8S = K8S / "collector"


def test_collector_gets_a_long_enough_kernel_queue_in_compose_and_kubernetes() -> None:
    # net.unix.max_dgram_qlen is per network namespace: set for the collector's own.
    svc = service("collector")
    assert svc["sysctls"] == {"net.unix.max_dgram_qlen": MIN_QUEUE_LENGTH}
    assert svc["image"] == IMAGE and svc["profiles"] == ["collector"]
    kustomization = yaml.safe_load((COLLECTOR_K8S / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["collector-deployment.yaml"]
    deployment = yaml.safe_load((COLLECTOR_K8S / "collector-deployment.yaml").read_text())
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["sysctls"] == [
        {"name": "net.unix.max_dgram_qlen", "value": str(MIN_QUEUE_LENGTH)}
    ]
    assert spec["securityContext"]["runAsUser"] == image_uid()
    (container,) = spec["containers"]
    assert container["image"] == IMAGE
    parser = build_parser()
    for command in (svc["command"], container["command"]):
        args = parser.parse_args(command[1:])
        assert args.command == "collect"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    args = parser.parse_args(container["command"][1:])
    assert str(args.socket.parent) == mounts["libtlsrpt"]
    assert str(args.token_file.parent) == mounts["token"]
    assert str(args.api).endswith(":8080")
