#!/usr/bin/env bash
# Installs everything kilowatt's tests and demo need on a fresh Debian bookworm machine, and builds the
# Kubernetes binaries Debian does not ship (kube-apiserver, and on request the controller-manager and
# scheduler) from Debian's own `kubernetes` source package. Build outputs are cached outside the repo in
# $KILOWATT_CACHE (default ~/.cache/kilowatt) and only rebuilt when missing. Safe to run again.
#
# Usage: scripts/setup.sh [--components "kube-apiserver kube-controller-manager kube-scheduler"] [--no-python]
# (kube-controller-manager and kube-scheduler reuse the apiserver's build cache: about a minute more.)
set -euo pipefail

CACHE="${KILOWATT_CACHE:-$HOME/.cache/kilowatt}"
BIN="$CACHE/bin"
COMPONENTS="${KILOWATT_COMPONENTS:-kube-apiserver kube-controller-manager kube-scheduler}"
HELM_VERSION="${KILOWATT_HELM_VERSION:-v3.16.4}"
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

# 1. Debian packages: etcd, Prometheus, and what the source build needs.
need_pkgs=()
for p in etcd-server prometheus openssl rsync dpkg-dev make ca-certificates; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
  step "apt-get install ${need_pkgs[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi
# Debian starts services on install; the tests run their own instances on loopback.
for svc in etcd prometheus; do $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true; done

# 2. A private apt configuration: bookworm sources + bullseye binaries (Go 1.15), leaving the system's alone.
APT="$CACHE/apt"
mkdir -p "$APT/lists/partial" "$APT/archives/partial"
cat >"$APT/sources.list" <<SRC
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
SRC
apt_private=(-o "Dir::Etc::SourceList=$APT/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
             -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache::Archives=$APT/archives" -o "APT::Sandbox::User=root")
apt_ready=0
private_apt_update() {
  ((apt_ready)) && return
  step "apt-get update (private configuration in $APT)"
  apt-get "${apt_private[@]}" update -q
  apt_ready=1
}

# 3. kubectl matching the 1.20 API server (Debian's kubernetes-client), unpacked into the cache.
if [[ ! -x "$BIN/kubectl" ]]; then
  private_apt_update
  step "kubectl 1.20 from Debian's kubernetes-client"
  tmp=$(mktemp -d); (cd "$tmp" && apt-get "${apt_private[@]}" download -q kubernetes-client/bookworm)
  dpkg -x "$tmp"/kubernetes-client_*.deb "$tmp/x"; cp "$tmp/x/usr/bin/kubectl" "$BIN/kubectl"; rm -rf "$tmp"
fi

# 4. Go 1.15 from bullseye: later Go builds an apiserver that crashes on custom resources (reflect2 v1.0.1).
GO115="$CACHE/go1.15"
if [[ ! -x "$GO115/usr/lib/go-1.15/bin/go" ]]; then
  private_apt_update
  step "Go 1.15 from Debian bullseye (golang-1.15-go, golang-1.15-src)"
  tmp=$(mktemp -d); (cd "$tmp" && apt-get "${apt_private[@]}" download -q golang-1.15-go/bullseye golang-1.15-src/bullseye)
  rm -rf "$GO115"; mkdir -p "$GO115"
  for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$GO115"; done; rm -rf "$tmp"
fi
GOROOT115="$GO115/usr/lib/go-1.15"

# 5. kube-apiserver (and friends) from Debian's kubernetes source package (upstream 1.20.2 with vendor/).
SRCDIR="$CACHE/src"
missing=()
for c in $COMPONENTS; do [[ -x "$BIN/$c" ]] || missing+=("$c"); done
if ((${#missing[@]})); then
  tree=$(ls -d "$SRCDIR"/kubernetes-*/ 2>/dev/null | head -1 || true)
  if [[ -z "$tree" ]]; then
    private_apt_update
    step "Debian source package 'kubernetes' (about 40 MB download)"
    rm -rf "$SRCDIR"; mkdir -p "$SRCDIR"
    (cd "$SRCDIR" && apt-get "${apt_private[@]}" source -q --download-only kubernetes/bookworm \
      && dpkg-source --no-check -x ./*.dsc >/dev/null)
    tree=$(ls -d "$SRCDIR"/kubernetes-*/ | head -1)
  fi
  for c in "${missing[@]}"; do
    start=$(date +%s)
    step "Building $c from $tree with Go 1.15 (about 4 minutes on 2 cores; cached in $BIN afterwards)"
    (
      cd "$tree"
      export GOROOT="$GOROOT115" PATH="$GOROOT115/bin:$PATH" GOCACHE="$CACHE/gocache" GOPATH="$CACHE/gopath"
      export CGO_ENABLED=0 GOPROXY=off KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean GOENV=off GOFLAGS=
      unset GOTOOLCHAIN
      # make prints little for minutes; a heartbeat shows it is alive.
      ( while sleep 30; do echo "   ... still building $c ($(elapsed "$start"))"; done ) & beat=$!
      trap 'kill $beat 2>/dev/null' EXIT
      set -o pipefail
      make WHAT="cmd/$c" 2>&1 | grep --line-buffered -v -E '^\s*$' | sed 's/^/   /'
    )
    cp "$tree/_output/local/bin/linux/amd64/$c" "$BIN/$c"
    echo "   built $BIN/$c in $(elapsed "$start")"
  done
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

# 8. The Python package with the twin (demo, report) and test dependencies.
if ((PYTHON_DEPS)); then
  step "pip install -e '.[twin,test]'"
  python3 -m pip install -q --disable-pip-version-check -e "$REPO[twin,test]"
fi

step "Ready. Binaries in $BIN:"
ls -1 "$BIN" | sed 's/^/   /'
