"""A real Prometheus server (Debian's `prometheus`) on loopback, scraping given targets every second."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from kilowatt.demo.controlplane import ControlPlaneError, find_binary, free_port


class PrometheusServer:
    def __init__(self, targets: list[str], scrape_interval: str = "1s", file_sd: Path | None = None) -> None:
        """``targets``: static targets (job ``fleet``); ``file_sd``: a targets file discovered as pods are (job
        ``pods``): each target's labels — namespace, pod, container — become its series' labels, as a
        PodMonitor's relabelling makes them."""
        self.dir = Path(tempfile.mkdtemp(prefix="kilowatt-prom-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.file_sd = file_sd
        self.process: subprocess.Popen | None = None

    def start(self, timeout_seconds: float = 30.0) -> PrometheusServer:
        binary = find_binary("prometheus")
        targets = ", ".join(f"'{t}'" for t in self.targets)
        (self.dir / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {self.scrape_interval}\n  evaluation_interval: {self.scrape_interval}\n"
            f"scrape_configs:\n  - job_name: fleet\n    static_configs:\n      - targets: [{targets}]\n"
            + (f"  - job_name: pods\n    file_sd_configs:\n      - files: ['{self.file_sd}']\n"
               "        refresh_interval: 1s\n" if self.file_sd else "")
        )
        self._log = open(self.dir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(binary), f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ControlPlaneError(f"prometheus exited: {(self.dir / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise ControlPlaneError("prometheus not ready in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.process:
            self._log.close()
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class FaultyProxy:
    """An HTTP proxy in front of Prometheus for fault tests: ``delay_seconds`` makes every answer slow (the
    operator's timeout fires), ``drop`` lists query substrings whose results come back empty (partial series)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay_seconds = 0.0
        self.drop: tuple[str, ...] = ()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> FaultyProxy:
        import json
        import threading
        import urllib.parse
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self, body: bytes | None) -> None:
                time.sleep(proxy.delay_seconds)
                request = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command,
                                                 headers={"Content-Type": self.headers.get("Content-Type", "")})
                try:
                    with urllib.request.urlopen(request, timeout=30) as r:
                        payload, status = r.read(), r.status
                except Exception as exc:  # noqa: BLE001 - report upstream trouble as a 502
                    payload, status = str(exc).encode(), 502
                query = urllib.parse.unquote_plus(self.path + "&" + (body or b"").decode(errors="replace"))
                if status == 200 and any(d in query for d in proxy.drop):
                    data = json.loads(payload)
                    data["data"]["result"] = []
                    payload = json.dumps(data).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): that is the point of a delay

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._forward(None)

            def do_POST(self) -> None:  # noqa: N802
                self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
