#!/usr/bin/env bash
# Installs everything kilowatt's tests and demo need on a fresh Debian bookworm machine: etcd and Prometheus from
# Debian's packages; kube-apiserver, kube-controller-manager, kube-scheduler and kubectl of Kubernetes
# $KUBERNETES_VERSION, helm and kwok built from the Go module proxy; kilowatt and its Python dependencies from PyPI
# into a virtual environment, .venv. Build outputs are cached outside the repo in $KILOWATT_CACHE (default
# ~/.cache/kilowatt) and only rebuilt when missing (or, for Kubernetes, when the pinned version changes).
# Safe to run again.
#
# Usage: scripts/setup.sh [--components "kube-apiserver kube-controller-manager kube-scheduler kubectl"] [--no-python]
set -euo pipefail

CACHE="${KILOWATT_CACHE:-$HOME/.cache/kilowatt}"
BIN="$CACHE/bin"
COMPONENTS="${KILOWATT_COMPONENTS:-kube-apiserver kube-controller-manager kube-scheduler kubectl}"
KUBERNETES_VERSION="${KILOWATT_KUBERNETES_VERSION:-v1.36.3}"
# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion); its API server is built too, for the test that
# installs the CRDs and checks their CEL rules on it (tests/integration/test_oldest_kubernetes.py).
OLDEST_KUBERNETES_VERSION="${KILOWATT_OLDEST_KUBERNETES_VERSION:-v1.32.2}"
HELM_VERSION="${KILOWATT_HELM_VERSION:-v3.16.4}"
GATEWAY_API_VERSION="${KILOWATT_GATEWAY_API_VERSION:-v1.4.0}"
INFERENCE_EXTENSION_VERSION="${KILOWATT_INFERENCE_EXTENSION_VERSION:-v1.3.0}"
KWOK_VERSION="${KILOWATT_KWOK_VERSION:-v0.8.0}"
PYTHON_DEPS=1
while (($#)); do
  case "$1" in
    --components) COMPONENTS="$2"; shift 2 ;;
    --no-python) PYTHON_DEPS=0; shift ;;
    *) echo "setup.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$BIN"
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
elapsed() { printf '%dm%02ds' $(( ($(date +%s) - $1) / 60 )) $(( ($(date +%s) - $1) % 60 )); }

# 1. Debian packages: etcd, Prometheus, openssl (test certificates), python3-venv, and mmdebstrap + umoci
#    (scripts/build-image.sh builds the operator image with them, no Docker daemon).
need_pkgs=()
for p in etcd-server prometheus openssl ca-certificates python3-venv mmdebstrap umoci; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
  step "apt-get install ${need_pkgs[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi
# Debian starts services on install; the tests run their own instances on loopback.
for svc in etcd prometheus; do $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true; done

# 2. Kubernetes from the Go module proxy (scripts/build-kubernetes.sh), with the machine's own Go: the API server,
#    controller-manager, scheduler and kubectl of one pinned release. Rebuilt when missing or when the pin moves.
missing=()
for c in $COMPONENTS; do
  [[ -x "$BIN/$c" && "$(cat "$BIN/$c.version" 2>/dev/null)" == "$KUBERNETES_VERSION" ]] || missing+=("$c")
done
if ((${#missing[@]})); then
  start=$(date +%s)
  step "Kubernetes $KUBERNETES_VERSION: ${missing[*]} (go build from the Go module proxy; ~3 minutes on 2 cores the first time)"
  "$REPO/scripts/build-kubernetes.sh" "$KUBERNETES_VERSION" "$BIN" "${missing[@]}"
  echo "   Kubernetes $KUBERNETES_VERSION ready in $(elapsed "$start")"
fi

OLDEST="$CACHE/kubernetes-$OLDEST_KUBERNETES_VERSION"
if [[ "$(cat "$OLDEST/kube-apiserver.version" 2>/dev/null)" != "$OLDEST_KUBERNETES_VERSION" ]]; then
  start=$(date +%s)
  step "Kubernetes $OLDEST_KUBERNETES_VERSION kube-apiserver, the oldest version supported (~3 minutes the first time)"
  "$REPO/scripts/build-kubernetes.sh" "$OLDEST_KUBERNETES_VERSION" "$OLDEST" kube-apiserver
  echo "   ready in $(elapsed "$start")"
fi

# 6. helm from the Go module proxy, with the machine's own Go.
if [[ ! -x "$BIN/helm" ]]; then
  step "helm $HELM_VERSION (go install from the Go module proxy, a few minutes the first time)"
  start=$(date +%s)
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "   built $BIN/helm in $(elapsed "$start")"
fi

# 7. kwok (simulated nodes and pod lifecycles) from the Go module proxy, and its stock "fast" stages (nodes Ready
#    with heartbeats, pods Running and Ready at once, deleted pods gone) from the same module.
if [[ ! -x "$BIN/kwok" || ! -s "$CACHE/kwok-stages.yaml" ]]; then
  step "kwok $KWOK_VERSION (go install from the Go module proxy)"
  start=$(date +%s)
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  stages="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml pod/fast/pod-ready.yaml \
           pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cat "$stages/$f"; echo "---"
  done >"$CACHE/kwok-stages.yaml"
  echo "   built $BIN/kwok in $(elapsed "$start")"
fi

# 7b. The Gateway API's standard CRDs (HTTPRoute, ...) and the Inference Extension's InferencePool CRD, from their
#     Go modules' config/crd folders (the routing tests install them into the test API server).
CRDS="$CACHE/crds"
if [[ ! -s "$CRDS/gateway-api-$GATEWAY_API_VERSION/gateway.networking.k8s.io_httproutes.yaml" ||
      ! -s "$CRDS/inference-extension-$INFERENCE_EXTENSION_VERSION/inference.networking.k8s.io_inferencepools.yaml" ]]; then
  step "Gateway API $GATEWAY_API_VERSION and Inference Extension $INFERENCE_EXTENSION_VERSION CRDs (Go module proxy)"
  moddir() { GOFLAGS=-mod=mod go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }
  gw=$(moddir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
  ie=$(moddir "sigs.k8s.io/gateway-api-inference-extension@$INFERENCE_EXTENSION_VERSION")
  mkdir -p "$CRDS/gateway-api-$GATEWAY_API_VERSION" "$CRDS/inference-extension-$INFERENCE_EXTENSION_VERSION"
  cp "$gw"/config/crd/standard/*.yaml "$CRDS/gateway-api-$GATEWAY_API_VERSION/"
  rm -f "$CRDS/gateway-api-$GATEWAY_API_VERSION/kustomization.yaml"
  cp "$ie/config/crd/bases/inference.networking.k8s.io_inferencepools.yaml" \
     "$CRDS/inference-extension-$INFERENCE_EXTENSION_VERSION/"
  chmod -R u+w "$CRDS"
fi

# 8. The Python package with the twin (demo, report) and test dependencies, in its own virtual environment
#    (.venv), never the machine's site-packages. Re-installed when pyproject.toml changes.
if ((PYTHON_DEPS)); then
  VENV="$REPO/.venv"
  PYTHON="${KILOWATT_PYTHON:-python3}"
  if [[ ! -x "$VENV/bin/python" ]]; then
    step "python3 -m venv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  stamp="$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)"
  if [[ "$(cat "$VENV/.kilowatt-installed" 2>/dev/null)" != "$stamp" ]]; then
    step "pip install -e '.[twin,test]' into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO[twin,test]"
    echo "$stamp" >"$VENV/.kilowatt-installed"
  fi
fi

step "Ready. Binaries in $BIN:"
ls -1 "$BIN" | sed 's/^/   /'
