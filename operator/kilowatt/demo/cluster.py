"""The demo's cluster: the embedded control plane (built on first use), the CRDs, the example objects and one
Node object per GPU node of each pool — what a cluster with GPU nodes would hold before kilowatt is installed."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from kilowatt.api.v1alpha1 import GROUP, AcceleratorPool
from kilowatt.demo.controlplane import ControlPlaneError, cache_bin_dir, find_binary

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_EXPECTED_SECONDS = 300.0  # kube-apiserver from Debian's source on 2 cores
KINDS = ("AcceleratorPool", "InferenceService")


def missing_binaries() -> list[str]:
    missing = []
    for name in ("kube-apiserver", "etcd"):
        try:
            find_binary(name)
        except ControlPlaneError:
            missing.append(name)
    return missing


def build_binaries(say: Callable[[str], None], tty: bool) -> None:
    """Run scripts/setup.sh (without the Python step) to install etcd and build kube-apiserver, with a progress
    bar against the usual build time; raise ControlPlaneError with the tail of its output if it fails."""
    script = REPO_ROOT / "scripts/setup.sh"
    if not script.exists():
        raise ControlPlaneError(f"kube-apiserver is not in {cache_bin_dir()} and {script} is not here to build it; "
                                "run kilowatt from a clone of its repository, or put kube-apiserver and etcd on PATH")
    say(f"kube-apiserver and etcd are not built yet: building them now with {script} "
        f"(about {BUILD_EXPECTED_SECONDS / 60:.0f} minutes on 2 cores, once; cached in {cache_bin_dir()})")
    started = time.monotonic()
    proc = subprocess.Popen([str(script), "--no-python"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    tail: list[str] = []
    last = [""]

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line.strip():
                tail.append(line)
                del tail[:-40]
                last[0] = line.strip()[:70]
                if not tty:
                    say(f"  {line}")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        if tty:
            elapsed = time.monotonic() - started
            done = min(elapsed / BUILD_EXPECTED_SECONDS, 0.99)
            bar = "#" * int(done * 30)
            print(f"\r  [{bar:30}] {elapsed / 60:4.1f} min  {last[0]:70}", end="", file=sys.stderr, flush=True)
        time.sleep(0.5)
    reader.join(timeout=5)
    if tty:
        print(file=sys.stderr)
    if proc.returncode != 0:
        raise ControlPlaneError("building kube-apiserver failed (scripts/setup.sh exit "
                                f"{proc.returncode}):\n" + "\n".join(tail[-15:]))
    say(f"built in {(time.monotonic() - started) / 60:.1f} minutes")


def manifest_documents(paths: list[str]) -> list[dict]:
    """The AcceleratorPool and InferenceService documents in YAML files or directories, as written."""
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml")) if p.is_dir() else [p]
    docs = []
    for f in files:
        for doc in yaml.safe_load_all(f.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") in KINDS:
                docs.append(doc)
    return docs


def install_crds(api_client: client.ApiClient, timeout_seconds: float = 30.0) -> None:
    ext = client.ApiextensionsV1Api(api_client)
    names = []
    for path in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text(encoding="utf-8"))
        names.append(body["metadata"]["name"])
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
    deadline = time.monotonic() + timeout_seconds
    for name in names:
        while True:
            crd = ext.read_custom_resource_definition(name)
            if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
                break
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"CRD {name} not established after {timeout_seconds:.0f}s")
            time.sleep(0.2)


def apply_objects(api_client: client.ApiClient, docs: list[dict]) -> None:
    """Create (or replace) the example objects, as ``kubectl apply -f`` would."""
    custom = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    for doc in docs:
        group, version = doc["apiVersion"].split("/")
        if group != GROUP:
            continue
        meta = doc["metadata"]
        if doc["kind"] == "AcceleratorPool":
            create = lambda d=doc, v=version: custom.create_cluster_custom_object(group, v, "acceleratorpools", d)  # noqa: E731
        else:
            ns = meta.get("namespace", "default")
            try:
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
            except ApiException as exc:
                if exc.status != 409:
                    raise
            create = lambda d=doc, v=version, n=ns: custom.create_namespaced_custom_object(  # noqa: E731
                group, v, n, "inferenceservices", d)
        try:
            create()
        except ApiException as exc:
            if exc.status != 409:
                raise


def create_nodes(api_client: client.ApiClient, pools: list[AcceleratorPool]) -> dict[str, int]:
    """Node objects for each pool: ``maxGPUs`` (default one node) in nodes of ``gpusPerNode`` GPUs, labelled with
    the pool's nodeSelector and tainted as its tolerations expect. Returns GPUs per pool."""
    core = client.CoreV1Api(api_client)
    out = {}
    for pool in pools:
        per_node = pool.spec.gpus_per_node
        gpus = pool.spec.max_gpus or per_node
        out[pool.name] = gpus
        taints = [client.V1Taint(key=t.key, effect=t.effect, value=t.value)
                  for t in pool.spec.tolerations if t.key and t.effect]
        for i in range(math.ceil(gpus / per_node)):
            here = min(per_node, gpus - i * per_node)
            name = f"{pool.name}-node-{i}"
            node = client.V1Node(metadata=client.V1ObjectMeta(name=name, labels={
                **pool.spec.node_selector, "kubernetes.io/hostname": name, "kilowatt.dev/demo": "true"}),
                spec=client.V1NodeSpec(taints=taints or None))
            try:
                core.create_node(node)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            core.patch_node_status(name, {"status": {
                "allocatable": {"nvidia.com/gpu": str(here), "cpu": "64", "memory": "512Gi", "pods": "110"},
                "capacity": {"nvidia.com/gpu": str(here), "cpu": "64", "memory": "512Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "simulated by kilowatt demo"}]}})
    return out
