"""deploy/: the Kubernetes manifests against the Kubernetes schemas, and against each other.

A manifest that validates can still be wrong together with the others (a probe on a
port the container does not name, a grace period shorter than the drain), or with the
server (an environment variable it does not read): those are checked here too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from remotemedia.cli.serve import serve_flags
from remotemedia.service.metrics import ServerMetrics
from remotemedia.session.session import CLEANUP_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
"""The oldest Kubernetes these manifests target (gRPC probes are GA since 1.27)."""
STREAMING = "remotemedia.v1.StreamingPipelineService"


def _documents() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return {
        name: yaml.safe_load((KUBERNETES / name).read_text()) for name in kustomization["resources"]
    }


def _by_kind() -> dict[str, dict[str, Any]]:
    return {document["kind"]: document for document in _documents().values()}


def _container() -> dict[str, Any]:
    (container,) = _by_kind()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _env() -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in _container()["env"]}


def test_the_kustomization_lists_every_manifest_in_the_folder() -> None:
    listed = set(_documents())
    present = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("name", sorted(_documents()))
def test_every_manifest_validates_against_the_kubernetes_schemas(name: str) -> None:
    kubernetes_validate.validate(_documents()[name], KUBERNETES_VERSION, strict=True)


def test_a_broken_manifest_is_refused_by_the_validation() -> None:
    # The check can fail: a misspelled field is an error in strict mode.
    deployment = _by_kind()["Deployment"]
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_labels_and_names_agree_across_the_manifests() -> None:
    kinds = _by_kind()
    deployment = kinds["Deployment"]
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pods.items()
    assert kinds["Service"]["spec"]["selector"].items() <= pods.items()
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pods.items()
    target = kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_ports_and_probes_point_at_what_the_server_listens_on() -> None:
    container, env = _container(), _env()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert env["GRPC_BIND_ADDRESS"] == f"0.0.0.0:{ports['grpc']}"
    assert env["REMOTEMEDIA_METRICS_PORT"] == str(ports["metrics"])
    assert env["REMOTEMEDIA_METRICS_HOST"] == "0.0.0.0"  # the kubelet and Prometheus reach it
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"]
    # Readiness asks for the streaming service by name: it turns NOT_SERVING on SIGTERM.
    assert container["readinessProbe"]["grpc"]["service"] == STREAMING
    # Liveness must not follow health (NOT_SERVING while draining): the metrics page.
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    service_ports = {
        port["name"]: port["targetPort"] for port in _by_kind()["Service"]["spec"]["ports"]
    }
    assert set(service_ports.values()) <= set(ports)
    annotations = _by_kind()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert _by_kind()["Service"]["spec"]["clusterIP"] == "None"  # headless


def test_the_grace_period_outlasts_the_drain() -> None:
    env = _env()
    spec = _by_kind()["Deployment"]["spec"]["template"]["spec"]
    drain = float(env["REMOTEMEDIA_DRAIN_DELAY"]) + float(env["REMOTEMEDIA_DRAIN_TIMEOUT"])
    # After the drain timeout, sessions are cancelled and their workers stopped
    # within the session cleanup timeout.
    assert spec["terminationGracePeriodSeconds"] > drain + CLEANUP_TIMEOUT


def test_every_environment_variable_is_one_the_server_reads() -> None:
    known = {flag.env for flag in serve_flags()} | {"GRPC_REQUIRE_AUTH"}
    assert {item["name"] for item in _container()["env"]} <= known


def test_shared_memory_is_an_in_memory_volume_and_the_token_a_secret() -> None:
    container = _container()
    spec = _by_kind()["Deployment"]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "/tmp" in mounts  # iceoryx2's files, on a read-only root filesystem
    (tokens,) = [item for item in container["env"] if item["name"] == "GRPC_AUTH_TOKENS"]
    secret = tokens["valueFrom"]["secretKeyRef"]["name"]
    readme = (ROOT / "README.md").read_text()
    assert f"create secret generic {secret}" in readme  # the README says how to make it
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_the_haproxy_health_check_bytes_come_from_the_script() -> None:
    config = (ROOT / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    (sent,) = re.findall(r"tcp-check send-binary (\w+)", config)
    printed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "haproxy_health_check.py"), STREAMING],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert sent == printed


def test_the_image_runs_serve_as_a_user_on_the_ports_the_manifests_use() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Containerfile").read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    entrypoint = next(line for line in lines if line.startswith("ENTRYPOINT"))
    assert entrypoint == 'ENTRYPOINT ["remotemedia", "serve"]'
    user = next(line for line in lines if line.startswith("USER")).split()[1]
    assert not user.startswith(("0", "root"))
    env = dict(
        re.findall(r"(\w+)=(\S+)", " ".join(line for line in lines if line.startswith("ENV")))
    )
    known = {flag.env for flag in serve_flags()}
    served = {
        name: value for name, value in env.items() if name.startswith(("GRPC_", "REMOTEMEDIA_"))
    }
    assert set(served) <= known
    ports = {port["name"]: port["containerPort"] for port in _container()["ports"]}
    assert served["GRPC_BIND_ADDRESS"] == f"0.0.0.0:{ports['grpc']}"
    assert served["REMOTEMEDIA_METRICS_PORT"] == str(ports["metrics"])
    exposed = next(line for line in lines if line.startswith("EXPOSE")).split()[1:]
    assert sorted(exposed) == sorted(str(port) for port in ports.values())
    # The UID the manifests run as is the image's user.
    context = _by_kind()["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert user.split(":")[0] == str(context["runAsUser"])


# --------------------------------------------------------------------------- Grafana

DASHBOARD = ROOT / "deploy" / "grafana" / "remotemedia.json"


def test_the_dashboard_file_is_what_its_generator_writes() -> None:
    checked = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout


def test_the_dashboards_panels_are_placed_and_query_the_servers_metrics() -> None:
    document = json.loads(DASHBOARD.read_text())
    panels = document["panels"]
    assert [panel["id"] for panel in panels] == list(range(1, len(panels) + 1))
    exported = set(re.findall(r"^# TYPE (\w+)", ServerMetrics().render(), re.MULTILINE))
    for panel in panels:
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            names = set(
                re.findall(r"\b(remotemedia_\w+?)(?:_bucket|_count|_sum)?\b", target["expr"])
            )
            assert names, target["expr"]
            assert names <= exported, (panel["title"], names - exported)  # no typo'd metric
