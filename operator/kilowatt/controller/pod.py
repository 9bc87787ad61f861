"""The serving container as vLLM needs it: the arguments kilowatt owns, shared memory for tensor parallelism,
probes on vLLM's /health, and resource requests where the template has none. Pure: a pod template in, a pod
template out.

What vLLM asks for (docs "Using Docker" and "Distributed inference and serving", vLLM 0.11): tensor-parallel
workers talk through NCCL, which needs more shared memory than a container's default 64 MiB (`--ipc=host` or
`--shm-size` in Docker; a memory-backed emptyDir at /dev/shm in Kubernetes); `/health` answers 200 once the
engine serves.
"""

from __future__ import annotations

import math
from typing import Any

# Arguments whose values kilowatt decides: every spelling a user may have written is removed first.
OWNED_FLAGS = {
    "--model": ("--model",),
    "--max-model-len": ("--max-model-len",),
    "--tensor-parallel-size": ("--tensor-parallel-size", "-tp"),
}
SHM_VOLUME = "kilowatt-shm"
SHM_GIB_PER_GPU = 2  # NCCL's buffers between k workers, with room for vLLM's own shared-memory broadcast
DEFAULT_PORT = 8000  # vLLM's OpenAI-compatible server
BYTES_PER_PARAMETER = {"fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
GIB = 2**30


def owned_args(args: list[str], model: str, max_model_len: int | None, tensor_parallel: int) -> list[str]:
    """``args`` without any value for the flags kilowatt owns (``--x y``, ``--x=y``, ``-tp y``), then kilowatt's
    own: the model, its context length and the planned degree. A leading positional argument (``vllm serve
    MODEL``) is the model too, and is replaced rather than doubled."""
    spellings = {s for names in OWNED_FLAGS.values() for s in names}
    out: list[str] = []
    skip = False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        flag = a.split("=", 1)[0]
        if flag in spellings:
            skip = "=" not in a  # the value is the next argument
            continue
        out.append(a)
    positional_model = bool(out) and not out[0].startswith("-") and out[0] == (args[0] if args else None)
    if positional_model:
        out[0] = model
        owned = []
    else:
        owned = ["--model", model]
    if max_model_len:
        owned += ["--max-model-len", str(max_model_len)]
    owned += ["--tensor-parallel-size", str(tensor_parallel)]
    return out + owned


def _port(container: dict) -> int | str:
    ports = container.get("ports") or []
    return ports[0].get("containerPort", DEFAULT_PORT) if ports else DEFAULT_PORT


def add_probes(container: dict, startup_seconds: float) -> None:
    """Startup and readiness probes on /health where the template has none: the stabiliser trusts "ready"."""
    port = _port(container)
    if not container.get("startupProbe"):
        # Loading weights takes minutes: allow three times the pool's start-up estimate, at least ten minutes.
        allowed = max(600.0, 3.0 * startup_seconds)
        container["startupProbe"] = {"httpGet": {"path": "/health", "port": port}, "periodSeconds": 10,
                                     "failureThreshold": math.ceil(allowed / 10)}
    if not container.get("readinessProbe"):
        container["readinessProbe"] = {"httpGet": {"path": "/health", "port": port}, "periodSeconds": 5,
                                       "failureThreshold": 3}


def add_shared_memory(pod: dict, container: dict, tensor_parallel: int) -> None:
    """A memory-backed /dev/shm sized for the degree (above 1 only)."""
    volumes = [v for v in pod.get("volumes") or [] if v.get("name") != SHM_VOLUME]
    mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") != SHM_VOLUME]
    if tensor_parallel > 1 and not any(m.get("mountPath") == "/dev/shm" for m in mounts):
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory",
                                                         "sizeLimit": f"{SHM_GIB_PER_GPU * tensor_parallel}Gi"}})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    if volumes:
        pod["volumes"] = volumes
    if mounts:
        container["volumeMounts"] = mounts


def add_requests(container: dict, model: dict, tensor_parallel: int) -> None:
    """CPU and memory requests where the template sets neither: 2 CPUs per GPU, and host memory for reading the
    weights once (1.2x their size, at least 16 GiB) plus the shared memory above."""
    resources = container.setdefault("resources", {})
    requests = dict(resources.get("requests") or {})
    if "cpu" not in requests:
        requests["cpu"] = str(2 * tensor_parallel)
    if "memory" not in requests:
        weights = float(model.get("parametersBillion") or 0) * 1e9 * BYTES_PER_PARAMETER.get(
            str(model.get("dtype", "bf16")), 2.0)
        shm = SHM_GIB_PER_GPU * tensor_parallel if tensor_parallel > 1 else 0
        requests["memory"] = f"{max(16, math.ceil(1.2 * weights / GIB)) + shm}Gi"
    resources["requests"] = requests


def serving_pod(template: dict, model: dict, tensor_parallel: int, startup_seconds: float) -> None:
    """Make the template's first container one vLLM accepts (in place)."""
    pod = template.setdefault("spec", {})
    containers = pod.setdefault("containers", [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}])
    main: dict[str, Any] = containers[0]
    main["args"] = owned_args(list(main.get("args") or []), model.get("name", ""), model.get("maxContextTokens"),
                              tensor_parallel)
    add_shared_memory(pod, main, tensor_parallel)
    add_probes(main, startup_seconds)
    add_requests(main, model, tensor_parallel)
