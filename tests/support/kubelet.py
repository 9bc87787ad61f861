"""A stand-in for kubelets and the Deployment controller where none run: kilowatt's Deployments report their
replicas ready (after an optional delay), as a cluster would once pods start."""

from __future__ import annotations

import threading
import time
from typing import Any


class ReadyDeployments:
    def __init__(self, apps: Any, interval_seconds: float = 0.3, startup_seconds: float = 0.0) -> None:
        self.apps = apps
        self.interval = interval_seconds
        self.startup = startup_seconds
        self._seen: dict[tuple[str, str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ReadyDeployments:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the API server may be restarting under a fault test
                pass

    def tick(self) -> None:
        now = time.monotonic()
        for d in self.apps.list_deployment_for_all_namespaces(label_selector="kilowatt.dev/service").items:
            want = d.spec.replicas or 0
            key = (d.metadata.namespace, d.metadata.name, want)
            since = self._seen.setdefault(key, now)
            ready = want if now - since >= self.startup else min(want, (d.status.ready_replicas or 0))
            status = d.status
            if status and status.ready_replicas == ready and status.replicas == want:
                continue
            self.apps.patch_namespaced_deployment_status(d.metadata.name, d.metadata.namespace, {"status": {
                "replicas": want, "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": want,
                "observedGeneration": d.metadata.generation}})
