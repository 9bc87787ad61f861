"""The operator image: scripts/build-image.sh builds an OCI archive with no Docker daemon (Debian bookworm from
Debian's packages, kilowatt from PyPI wheels). Checked as any runtime would: a valid OCI image layout whose blobs
match their digests, a config that runs `kilowatt` as UID 65532, and a root filesystem in which `kilowatt
--version` and `kilowatt run --help` run as that user with the root filesystem mounted read-only."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.paths import REPO

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> tuple[Path, dict, dict]:
    if os.geteuid() != 0:
        pytest.skip("scripts/build-image.sh needs root (mmdebstrap's root mode); CI runs as root")
    built = subprocess.run([str(REPO / "scripts/build-image.sh")], capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stderr[-4000:]
    archive = Path(built.stdout.strip().splitlines()[-1])
    layout = tmp_path_factory.mktemp("oci")
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="tar")
    index = json.loads((layout / "index.json").read_text())
    (descriptor,) = index["manifests"]
    manifest = json.loads(_blob(layout, descriptor).decode())
    config = json.loads(_blob(layout, manifest["config"]).decode())
    return layout, manifest, config


def _blob(layout: Path, descriptor: dict) -> bytes:
    algorithm, digest = descriptor["digest"].split(":")
    data = (layout / "blobs" / algorithm / digest).read_bytes()
    assert hashlib.new(algorithm, data).hexdigest() == digest, f"blob {descriptor['digest']} does not match it"
    assert len(data) == descriptor["size"], descriptor
    return data


def test_the_archive_is_an_oci_image_layout_whose_blobs_match_their_digests(image) -> None:
    layout, manifest, config = image
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    assert index["manifests"][0]["mediaType"] == OCI_MANIFEST
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    assert manifest["schemaVersion"] == 2 and manifest["config"]["mediaType"] == OCI_CONFIG
    assert manifest["layers"], "an image with no layers"
    for layer in manifest["layers"]:
        assert layer["mediaType"] == OCI_LAYER_GZIP
        _blob(layout, layer)  # digest and size
    # The config's diff_ids are the uncompressed layers' digests, one per layer.
    assert config["rootfs"]["type"] == "layers" and len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])


def test_the_config_runs_kilowatt_as_a_non_root_user(image) -> None:
    _, _, config = image
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    run = config["config"]
    assert run["User"] == "65532:65532"
    assert run["Entrypoint"] == ["kilowatt"] and run["Cmd"] == ["run"]
    env = dict(e.split("=", 1) for e in run["Env"])
    assert env["PATH"].split(":")[0] == "/opt/kilowatt/bin"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # nothing written beside the code on a read-only root


@pytest.fixture(scope="module")
def rootfs(image, tmp_path_factory) -> Path:
    if not shutil.which("umoci"):
        pytest.skip("umoci not installed (scripts/build-image.sh installs it)")
    layout, _, _ = image
    ref = json.loads((layout / "index.json").read_text())["manifests"][0]["annotations"][
        "org.opencontainers.image.ref.name"]
    bundle = tmp_path_factory.mktemp("bundle") / "b"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{ref}", str(bundle)], check=True, capture_output=True)
    return bundle / "rootfs"


def _run_in_image(rootfs: Path, config: dict, *argv: str) -> subprocess.CompletedProcess:
    """The image's entrypoint with ``argv``, as a runtime would start it."""
    return _shell_in_image(rootfs, config, " ".join([*config["config"]["Entrypoint"], *argv]))


def _shell_in_image(rootfs: Path, config: dict, command: str) -> subprocess.CompletedProcess:
    """``command`` (sh) as the image's user, with its environment and working directory, the root filesystem
    read-only and an empty /tmp (as the chart mounts one): a private mount namespace, a read-only bind, chroot."""
    run = config["config"]
    env = " ".join(f"'{e}'" for e in run["Env"])
    script = (
        f"mount --bind {rootfs} {rootfs} && mount -o remount,bind,ro {rootfs} && "
        f"mount -t tmpfs tmpfs {rootfs}/tmp && "
        f"chroot --userspec={run['User']} {rootfs} /usr/bin/env -i {env} sh -c 'cd {run['WorkingDir']} && {command}'"
    )
    return subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=120)


def test_kilowatt_runs_inside_the_image_as_its_user_on_a_read_only_root(image, rootfs) -> None:
    _, _, config = image
    version = _run_in_image(rootfs, config, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "kilowatt 0.1.0"
    run_help = _run_in_image(rootfs, config, "run", "--help")
    assert run_help.returncode == 0, run_help.stderr
    assert "--prometheus-url" in run_help.stdout
    who = _shell_in_image(rootfs, config, "id -u; id -g; touch /opt/x 2>&1; touch /tmp/x && echo tmp-writable")
    lines = who.stdout.splitlines()
    assert lines[:2] == ["65532", "65532"], who
    assert "Read-only file system" in who.stdout and "tmp-writable" in who.stdout, who


def test_no_compiler_or_package_manager_ships_in_the_image(image, rootfs) -> None:
    for tool in ("usr/bin/gcc", "usr/bin/cc", "usr/bin/apt-get", "opt/kilowatt/bin/pip"):
        assert not (rootfs / tool).exists(), tool
