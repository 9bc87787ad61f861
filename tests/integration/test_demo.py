"""`kilowatt demo` as a user runs it, and the errors a newcomer meets on `kilowatt run`, each in a line or two."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client, config

from kilowatt.demo.controlplane import ControlPlane
from kilowatt.demo.controlplane import free_port

from tests.paths import REPO

KILOWATT = [sys.executable, "-m", "kilowatt.cli"]


def kilowatt(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*KILOWATT, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def fresh_control_plane():
    """A control plane of the demo's own: the demo installs CRDs, examples and Nodes as on an empty cluster."""
    cp = ControlPlane().start()
    yield cp
    cp.stop()


def test_demo_moves_deployments_in_the_api_server_prints_a_summary_and_writes_the_report(fresh_control_plane,
                                                                                         tmp_path: Path) -> None:
    report = tmp_path / "report"
    result = kilowatt("demo", "--no-tui", "--kubeconfig", str(fresh_control_plane.kubeconfig), "--duration", "40m",
                      "--speed", "0", "--baselines", "hpa-h100,static-peak", "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    # Decisions with their reasons, as the operator made them.
    decisions = [line for line in out.splitlines() if " decision: scaled llama3-8b-chat" in line]
    assert len(decisions) >= 2, out[-3000:]
    assert all("within TTFT 500 ms / TPOT 50 ms" in d or "Held" in d or "most that can run" in d for d in decisions)
    # The summary, with the operator's own run and each baseline on the same requests.
    summary = out[out.index("summary:"):]
    for name in ("kilowatt (the operator)", "hpa-h100", "static-peak"):
        assert name in summary
    changes = int(summary.split(" Deployment changes")[0].rsplit(",", 1)[1].split()[0])
    assert changes >= 1
    # The report: the page and its plots.
    assert (report / "report.html").stat().st_size > 10_000
    assert len(list(report.glob("*.png"))) == 4
    data = json.loads((report / "result.json").read_text())
    assert [p["name"] for p in data["policies"]] == ["kilowatt", "hpa-h100", "static-peak"]
    assert data["deploymentChanges"] == changes

    # What the API server holds afterwards: the operator's Deployments, changed since they were created, with the
    # status the demo's simulated cluster wrote; the service's status filled in by the operator.
    api = config.new_client_from_config(config_file=str(fresh_control_plane.kubeconfig))
    deployments = client.AppsV1Api(api).list_namespaced_deployment(
        "default", label_selector="kilowatt.dev/service=llama3-8b-chat").items
    assert deployments
    assert max(d.metadata.generation for d in deployments) >= 2
    serving = [d for d in deployments if (d.spec.replicas or 0) > 0]
    assert serving and all(d.status.replicas == d.spec.replicas for d in serving)
    svc = client.CustomObjectsApi(api).get_namespaced_custom_object("kilowatt.dev", "v1alpha1", "default",
                                                                    "inferenceservices", "llama3-8b-chat")
    assert svc["status"]["placementSummary"] not in ("", "0")
    assert svc["status"]["observed"]["requestsPerSecond"] > 0
    nodes = client.CoreV1Api(api).list_node(label_selector="kilowatt.dev/demo=true").items
    assert {n.metadata.labels["kilowatt.dev/gpu"] for n in nodes} == {"rtx4090", "h100"}


def test_demo_on_its_embedded_control_plane_stops_cleanly_on_ctrl_c_and_still_reports(tmp_path: Path) -> None:
    report = tmp_path / "report"
    proc = subprocess.Popen([*KILOWATT, "demo", "--no-tui", "--duration", "24h", "--speed", "200", "--baselines",
                             "hpa-h100", "--report", str(report)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:  # wait for a decision and a period served, then interrupt as a user would
        lines.append(line)
        text = "".join(lines)
        if (" decision: " in text and " load " in line) or time.monotonic() > deadline:
            break
    kubeconfig = next(line.split("=", 1)[1].split()[0] for line in lines if line.startswith("KUBECONFIG="))
    proc.send_signal(signal.SIGINT)
    # Generous: after Ctrl-C it still runs the baseline (its HPA target tuned first) on what was served.
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the demo did not finish after Ctrl-C; its last output:\n{(''.join(lines) + out)[-3000:]}"
                    f"\nstderr:\n{err[-3000:]}")
    out = "".join(lines) + out
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in out + err
    assert "stopped at" in out and "summary:" in out and "hpa-h100" in out
    assert (report / "report.html").exists()
    # The embedded control plane is gone with its directory.
    assert not Path(kubeconfig).exists()


def test_run_without_a_cluster_says_so_in_one_line(tmp_path: Path) -> None:
    no_config = kilowatt("run", "--standalone", env={"KUBECONFIG": str(tmp_path / "missing"),
                                                      "HOME": str(tmp_path)}, timeout=60)
    assert no_config.returncode == 1
    assert no_config.stderr.startswith("error: no Kubernetes cluster configured: set KUBECONFIG")
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{free_port()}"}}}}]
users: [{{name: u, user: {{token: x}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    unreachable = kilowatt("run", "--standalone", env={"KUBECONFIG": str(dead)}, timeout=60)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("error: cannot reach the Kubernetes API server at https://127.0.0.1:")
    assert "Connection refused" in unreachable.stderr
    for r in (no_config, unreachable):
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2


def test_run_without_the_crds_says_how_to_install_them(tmp_path: Path) -> None:
    with ControlPlane() as cp:
        result = kilowatt("run", "--standalone", env={"KUBECONFIG": str(cp.kubeconfig)}, timeout=60)
    assert result.returncode == 1
    assert "the kilowatt CRDs are not installed" in result.stderr and "kubectl apply -f crds/" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_run_warns_of_a_silent_prometheus_and_a_pool_without_nodes_and_keeps_running(control_plane, crds, api,
                                                                                    tmp_path: Path) -> None:
    api_client, k8s = api
    custom = k8s.CustomObjectsApi(api_client)
    pool = {"apiVersion": "kilowatt.dev/v1alpha1", "kind": "AcceleratorPool", "metadata": {"name": "nowhere"},
            "spec": {"gpu": {"model": "L40S", "memoryGiB": 48, "memoryBandwidthGBps": 864, "fp16TFLOPS": 362,
                             "boardPowerWatts": 350},
                     "nodeSelector": {"kilowatt.dev/gpu": "no-such-gpu"},
                     "cost": {"usdPerGPUHour": 1.0, "electricity": {"flatUsdPerKWh": 0.1}}}}
    custom.create_cluster_custom_object("kilowatt.dev", "v1alpha1", "acceleratorpools", pool)
    try:
        proc = subprocess.Popen(
            [*KILOWATT, "run", "--standalone", "--prometheus-url", f"http://127.0.0.1:{free_port()}",
             "--prometheus-timeout-seconds", "1", "--metrics-port", str(free_port())], cwd=REPO,
            env={**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        seen = []
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            text = "".join(seen)
            if ("Prometheus at" in text and "no node matches nodeSelector {'kilowatt.dev/gpu': 'no-such-gpu'}"
                    in text) or time.monotonic() > deadline:
                break
        still_running = proc.poll() is None
        proc.terminate()
        proc.wait(timeout=30)
    finally:
        custom.delete_cluster_custom_object("kilowatt.dev", "v1alpha1", "acceleratorpools", "nowhere")
    text = "".join(seen)
    assert still_running, text[-3000:]
    assert "does not answer" in text and "holds every placement" in text
    assert "pool nowhere: no node matches nodeSelector" in text
    assert "Traceback" not in text
