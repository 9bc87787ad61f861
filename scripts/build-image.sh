#!/usr/bin/env bash
# Builds the kilowatt operator image as an OCI archive with no Docker daemon and no registry: a Debian bookworm
# root filesystem from Debian's packages (mmdebstrap), kilowatt and its dependencies from PyPI into /opt/kilowatt
# (a virtual environment, from wheels fetched on this machine), packed into one layer and configured with umoci like the Dockerfile's
# image: user 65532:65532, entrypoint `kilowatt`, command `run`, nothing written outside /tmp.
#
#   scripts/build-image.sh [--output FILE] [--tag TAG]
#
# Default output: $KILOWATT_CACHE/image/kilowatt-<source hash>.oci.tar, reused while kilowatt's source, its
# pyproject.toml and this script are unchanged (prints the path either way). Push it with
#   skopeo copy oci-archive:FILE:TAG docker://REGISTRY/kilowatt:TAG
# About 3 minutes on 2 cores the first time. Needs root (mmdebstrap's root mode) and the Debian packages
# mmdebstrap and umoci, which it installs when missing.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KILOWATT_CACHE:-$HOME/.cache/kilowatt}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml")"
TAG="$VERSION"
OUTPUT=""
while (($#)); do
  case "$1" in
    --output) OUTPUT="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    *) echo "build-image.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
key=$(cd "$REPO" && { find operator/kilowatt -type f -not -path '*/__pycache__/*' -print0 | sort -z \
        | xargs -0 sha256sum; sha256sum pyproject.toml README.md scripts/build-image.sh; } | sha256sum | cut -c1-16)
DEFAULT_OUTPUT=0; [[ -n "$OUTPUT" ]] || DEFAULT_OUTPUT=1
OUTPUT="${OUTPUT:-$CACHE/image/kilowatt-$key.oci.tar}"
if [[ -s "$OUTPUT" ]]; then
  echo "$OUTPUT"
  exit 0
fi
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
need=()
for p in mmdebstrap umoci; do command -v "$p" >/dev/null || need+=("$p"); done
if ((${#need[@]})); then
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kilowatt-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
# Wheels are fetched here, with this machine's pip, proxy and certificates, for CPython 3.11 on x86_64 (Debian
# bookworm's Python); inside the new root pip installs from them with no network.
echo "==> wheels: kilowatt $VERSION and its dependencies (PyPI)" >&2
python3 -m pip wheel -q --no-deps --wheel-dir "$work/wheels" "$REPO" >&2
python3 -m pip download -q --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --python-version 3.11 --implementation cp --dest "$work/wheels" "$work"/wheels/kilowatt-*.whl >&2
echo "==> root filesystem: Debian bookworm (python3, ca-certificates, tzdata) + kilowatt $VERSION from PyPI" >&2
# essential, not minbase: no apt in the image, which installs nothing at run time (mmdebstrap drives the host's apt). The hooks run pip inside the new root
# (its Python is Debian's 3.11), then drop pip, caches and what only package managers need.
$SUDO mmdebstrap --quiet --variant=essential --include=python3,python3-venv,ca-certificates,tzdata \
  --customize-hook="copy-in '$work/wheels' /tmp" \
  --customize-hook='chroot "$1" python3 -m venv /opt/kilowatt' \
  --customize-hook='chroot "$1" env -i PATH=/usr/bin:/bin PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 /opt/kilowatt/bin/pip install -q --no-index --find-links /tmp/wheels kilowatt' \
  --customize-hook='chroot "$1" /opt/kilowatt/bin/pip uninstall -q -y pip setuptools' \
  --customize-hook='chroot "$1" /opt/kilowatt/bin/python -m compileall -q /opt/kilowatt/lib' \
  --customize-hook='echo "nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin" >>"$1"/etc/passwd; echo "nonroot:x:65532:" >>"$1"/etc/group' \
  --customize-hook='rm -rf "$1"/tmp/wheels "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
  --customize-hook='chmod 1777 "$1"/tmp' \
  bookworm "$work/rootfs.tar" http://deb.debian.org/debian >&2

echo "==> OCI layout (umoci)" >&2
cd "$work"
umoci init --layout oci
umoci new --image "oci:$TAG"
umoci raw add-layer --image "oci:$TAG" rootfs.tar
umoci config --image "oci:$TAG" \
  --config.user 65532:65532 \
  --config.entrypoint kilowatt --config.cmd run \
  --config.workingdir /tmp \
  --config.env PATH=/opt/kilowatt/bin:/usr/local/bin:/usr/bin:/bin \
  --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 --config.env HOME=/tmp \
  --os linux --architecture amd64 \
  --config.label org.opencontainers.image.title=kilowatt \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label org.opencontainers.image.licenses=Apache-2.0
umoci gc --layout oci
mkdir -p "$(dirname "$OUTPUT")"
tar -C oci -cf "$OUTPUT.tmp" . && mv "$OUTPUT.tmp" "$OUTPUT"
# The cache keeps one image: the one for the source as it is now.
((DEFAULT_OUTPUT)) && find "$CACHE/image" -name 'kilowatt-*.oci.tar' ! -path "$OUTPUT" -delete
printf '==> %s (%s) in %dm%02ds\n' "$OUTPUT" "$(du -h "$OUTPUT" | cut -f1)" \
  $(( ($(date +%s) - start) / 60 )) $(( ($(date +%s) - start) % 60 )) >&2
echo "$OUTPUT"
