"""Start a real kube-apiserver (1.36, built by scripts/setup.sh) and etcd (Debian's etcd-server) on loopback.

Certificates come from openssl, authentication from a static admin token, authorisation is RBAC (so the
operator's ServiceAccount can be checked for real). Everything lives in one temporary directory; ``stop``
kills both processes and removes it. Ready in about 3 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ADMIN_TOKEN = "kilowatt-admin-token"


class ControlPlaneError(RuntimeError):
    pass


def cache_bin_dir() -> Path:
    return Path(os.environ.get("KILOWATT_CACHE", Path.home() / ".cache/kilowatt")) / "bin"


def find_binary(name: str) -> Path:
    """A binary from the kilowatt cache, else from PATH; a clear error says how to get it."""
    cached = cache_bin_dir() / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ControlPlaneError(f"{name} not found in {cache_bin_dir()} or on PATH; run scripts/setup.sh to build it")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certs(d: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=kilowatt-test-ca", cwd=d)
    (d / "san.cnf").write_text(
        "[req]\ndistinguished_name=dn\n[dn]\n[ext]\nsubjectAltName=IP:127.0.0.1,DNS:localhost,"
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
             "-subj", "/CN=kube-apiserver", cwd=d)
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "apiserver.crt", "-days", "2", "-extfile", "san.cnf", "-extensions", "ext", cwd=d)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


class ControlPlane:
    """``with ControlPlane() as cp: ... cp.kubeconfig`` — or ``start()`` / ``stop()``."""

    def __init__(self, workdir: str | Path | None = None, apiserver: str | Path | None = None) -> None:
        """``apiserver``: a kube-apiserver binary other than the one scripts/setup.sh builds (another version)."""
        self._apiserver = Path(apiserver) if apiserver else None
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="kilowatt-cp-"))
        self.etcd_port = free_port()
        self.apiserver_port = free_port()
        self.processes: list[subprocess.Popen] = []
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        self.kubeconfig = self.dir / "kubeconfig"
        self.token = ADMIN_TOKEN

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self, timeout_seconds: float = 90.0, attempts: int = 3) -> ControlPlane:
        """Start etcd and kube-apiserver. Ports are picked free, then bound by the processes a moment later: when
        another process took one in between ("address already in use"), start again on fresh ports."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout_seconds)
            except ControlPlaneError as exc:
                if "address already in use" not in str(exc) or attempt == attempts:
                    raise
                self.etcd_port, self.apiserver_port = free_port(), free_port()
                self.server = f"https://127.0.0.1:{self.apiserver_port}"
        raise AssertionError("unreachable")

    def _start_once(self, timeout_seconds: float) -> ControlPlane:
        apiserver = self._apiserver or find_binary("kube-apiserver")
        etcd = find_binary("etcd")
        shutil.which("openssl") or self._fail("openssl not found; run scripts/setup.sh")
        self.dir.mkdir(parents=True, exist_ok=True)
        _make_certs(self.dir)
        (self.dir / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
        self._spawn("etcd", [
            str(etcd), "--name", "kilowatt-test", "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{free_port()}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        self._spawn("kube-apiserver", [
            str(apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={self.dir}",
            f"--tls-cert-file={self.dir / 'apiserver.crt'}", f"--tls-private-key-file={self.dir / 'apiserver.key'}",
            f"--client-ca-file={self.dir / 'ca.crt'}",
            f"--token-auth-file={self.dir / 'tokens.csv'}",
            f"--service-account-key-file={self.dir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.dir / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=RBAC",
            # As production clusters run it: an owner reference that blocks its owner's deletion needs update on
            # the owner's finalizers subresource, so the chart's RBAC is tested for what owner references need.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--v=0",
        ])
        self._write_kubeconfig()
        self._wait_ready(timeout_seconds)
        return self

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for proc in self.processes:
            if proc.stdout:
                proc.stdout.close()
        self.processes.clear()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ------------------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm subprocesses aimed at this control plane. HOME is its own directory so
        kubectl's discovery cache (keyed by host:port) never serves another, earlier server's API list."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HOME": str(self.dir)}

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _fail(self, message: str) -> None:
        raise ControlPlaneError(message)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.stdout = log  # type: ignore[assignment]  # kept so stop() closes it
        proc.args_name = name  # type: ignore[attr-defined]
        self.processes.append(proc)

    def restart_apiserver(self, down_seconds: float = 2.0, timeout_seconds: float = 90.0) -> None:
        """Kill kube-apiserver (etcd keeps the state), wait ``down_seconds``, start it again on the same port."""
        index = next(i for i, p in enumerate(self.processes) if getattr(p, "args_name", "") == "kube-apiserver")
        proc = self.processes[index]
        proc.kill()  # a crash: no graceful drain of watches
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
        time.sleep(down_seconds)
        self._spawn("kube-apiserver", list(proc.args))
        self.processes[index] = self.processes.pop()
        self._wait_ready(timeout_seconds)

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: kilowatt-test\n  cluster:\n    server: {self.server}\n"
            f"    certificate-authority: {self.dir / 'ca.crt'}\n"
            f"users:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\n"
            "contexts:\n- name: kilowatt-test\n  context:\n    cluster: kilowatt-test\n    user: admin\n"
            "current-context: kilowatt-test\n"
        )
        self.kubeconfig.chmod(0o600)  # it holds the admin token; kubectl and helm warn about anything looser

    def _wait_ready(self, timeout_seconds: float) -> None:
        context = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        request = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        deadline = time.monotonic() + timeout_seconds
        last = "no answer"
        while time.monotonic() < deadline:
            for proc, name in zip(self.processes, ("etcd", "kube-apiserver")):
                if proc.poll() is not None:
                    tail = self.log(name)[-2000:]
                    self.stop()
                    raise ControlPlaneError(f"{name} exited with code {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(request, context=context, timeout=2) as response:
                    if response.status == 200:
                        return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = str(exc)
            time.sleep(0.25)
        tail = self.log("kube-apiserver")[-2000:]
        self.stop()
        raise ControlPlaneError(f"kube-apiserver not ready after {timeout_seconds:.0f}s ({last}):\n{tail}")
