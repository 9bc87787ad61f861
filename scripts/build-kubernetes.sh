#!/usr/bin/env bash
# Builds Kubernetes binaries of one release from the Go module proxy with the machine's own Go, into OUTDIR.
#
#   scripts/build-kubernetes.sh VERSION OUTDIR [COMPONENT ...]
#   (default components: kube-apiserver kube-controller-manager kube-scheduler kubectl)
#
# k8s.io/kubernetes is published as a Go module whose go.mod points its staging libraries at ./staging (which the
# module zip does not carry); pointing them at the published k8s.io/X v0.MINOR.PATCH modules instead makes the
# tree build outside the Kubernetes repository. About 3 minutes for kube-apiserver on 2 cores, downloads included;
# the other components reuse its build cache. Writes OUTDIR/COMPONENT and OUTDIR/COMPONENT.version.
set -euo pipefail

VERSION="${1:?usage: build-kubernetes.sh VERSION OUTDIR [COMPONENT ...]}"
OUTDIR="${2:?usage: build-kubernetes.sh VERSION OUTDIR [COMPONENT ...]}"
shift 2
COMPONENTS=("$@")
((${#COMPONENTS[@]})) || COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
CACHE="${KILOWATT_CACHE:-$HOME/.cache/kilowatt}"
STAGING="v0.${VERSION#v1.}"           # v1.36.3 -> v0.36.3, the staging modules' tag for this release
SRC="$CACHE/src/kubernetes-$VERSION"
elapsed() { printf '%dm%02ds' $(( ($(date +%s) - $1) / 60 )) $(( ($(date +%s) - $1) % 60 )); }

export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
mkdir -p "$OUTDIR" "$CACHE/src"
if [[ ! -f "$SRC/.ready" ]]; then
  start=$(date +%s)
  echo "   go mod download k8s.io/kubernetes@$VERSION"
  dir=$(go mod download -json "k8s.io/kubernetes@$VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$SRC"; cp -r "$dir" "$SRC"; chmod -R u+w "$SRC"
  # k8s.io/X => ./staging/src/k8s.io/X  becomes  k8s.io/X => k8s.io/X v0.N.P
  sed -i -E "s#^(\s*)(k8s\.io/[A-Za-z0-9._-]+) => \./staging/src/k8s\.io/[A-Za-z0-9._-]+#\1\2 => \2 $STAGING#" "$SRC/go.mod"
  if grep -q '=> ./staging' "$SRC/go.mod"; then
    echo "build-kubernetes.sh: go.mod of $VERSION still points at ./staging after rewriting:" >&2
    grep '=> ./staging' "$SRC/go.mod" >&2; exit 1
  fi
  touch "$SRC/.ready"
  echo "   source ready in $(elapsed "$start")"
fi

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$VERSION -X k8s.io/component-base/version.gitTreeState=clean"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$VERSION"
major_minor="${VERSION#v}"; ldflags+=" -X k8s.io/component-base/version.gitMajor=${major_minor%%.*}"
minor="${major_minor#*.}"; ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
for c in "${COMPONENTS[@]}"; do
  start=$(date +%s)
  echo "   building $c $VERSION (go build, cached in $OUTDIR)"
  ( while sleep 30; do echo "   ... still building $c ($(elapsed "$start"))"; done ) & beat=$!
  (cd "$SRC" && go build -trimpath -ldflags "$ldflags" -o "$OUTDIR/$c.tmp" "./cmd/$c") || { kill $beat; exit 1; }
  kill $beat 2>/dev/null || true
  mv "$OUTDIR/$c.tmp" "$OUTDIR/$c"
  echo "$VERSION" >"$OUTDIR/$c.version"
  echo "   built $OUTDIR/$c in $(elapsed "$start")"
done
