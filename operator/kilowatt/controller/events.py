"""Kubernetes Events on the objects kilowatt decides about (core/v1, readable by `kubectl describe`)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from kubernetes import client

log = logging.getLogger("kilowatt.events")


class EventRecorder:
    def __init__(self, core: Any, component: str = "kilowatt") -> None:
        self.core = core
        self.component = component

    def post(self, body: dict, type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        namespace = meta.get("namespace") or "default"
        now = datetime.now(timezone.utc)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=body.get("apiVersion"), kind=body.get("kind"), name=meta["name"],
                namespace=meta.get("namespace"), uid=meta.get("uid"),
            ),
            reason=reason, message=message[:1024], type=type_, first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component=self.component), reporting_component=self.component,
        )
        try:
            self.core.create_namespaced_event(namespace, event)
        except Exception as exc:  # noqa: BLE001 - an event that cannot be posted must not stop a decision
            log.warning("could not post event %s on %s: %s", reason, meta["name"], exc)
