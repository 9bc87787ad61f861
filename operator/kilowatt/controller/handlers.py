"""kopf handlers: short and declarative. They validate, clean up, and ask the control loop for a period now.

The loop itself is not a kopf handler: one driver per process runs it beside kopf (kilowatt.runner.drive),
acting only while this process holds kopf's peering (controller/leadership.py), whatever pools exist.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import kopf

from kilowatt.api.v1alpha1 import GROUP, VERSION
from kilowatt.controller.actuator import LABEL_SERVICE
from kilowatt.controller.conditions import set_condition
from kilowatt.controller.loop import ControlLoop
from kilowatt.controller.validation import parse_pool, parse_service

log = logging.getLogger("kilowatt.handlers")


def runtime_memo(loop: ControlLoop, namespaces: tuple[str, ...] = (), peering_lifetime_seconds: int = 60) -> kopf.Memo:
    """What one operator's handlers share, passed to ``kopf.operator(memo=...)``: per operator, not per process.
    ``peering_lifetime_seconds``: a silent peer counts as gone after this, and a standby takes over."""
    return kopf.Memo(loop=loop, namespaces=namespaces, peering_lifetime_seconds=peering_lifetime_seconds)


def watched(namespace: str | None, memo: kopf.Memo, **_: Any) -> bool:
    return not memo.namespaces or namespace in memo.namespaces


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the ServiceAccount (so RBAC applies); elsewhere: $KUBECONFIG or ~/.kube/config."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = "kilowatt.dev/finalizer"  # never added now (no required delete handler)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kilowatt.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kilowatt.dev")
    settings.posting.level = logging.WARNING  # kilowatt posts its own decision events
    settings.watching.server_timeout = 300
    settings.peering.lifetime = memo.peering_lifetime_seconds


@kopf.on.create(GROUP, VERSION, "inferenceservices", when=watched)
@kopf.on.update(GROUP, VERSION, "inferenceservices", when=watched, field="spec")
@kopf.on.resume(GROUP, VERSION, "inferenceservices", when=watched)
def service_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Refuse what the schema cannot (cross-field rules) by name; otherwise plan at once, not next period."""
    _, problems = parse_service(dict(body))
    if problems:
        _report_invalid(body, patch, problems, memo.loop.clock.now())
        patch.status["observedGeneration"] = body.metadata.get("generation")
    memo.loop.request_run()


@kopf.on.delete(GROUP, VERSION, "inferenceservices", when=watched, optional=True)
def service_deleted(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """Remove the service's Deployments now (their owner references make the garbage collector do it too). This
    runs in one of kopf's threads: the loop is told to forget the service (thread-safe), not changed here.

    ``optional``: no finalizer. Deleting an InferenceService never waits for the operator (it may be uninstalled,
    or its CRDs deleted first); the owner references clean up, and a loop that missed this only plans services
    it still lists. kopf removes the finalizer earlier versions added once it sees the object."""
    loop = memo.loop
    for d in loop.apps.list_namespaced_deployment(namespace, label_selector=f"{LABEL_SERVICE}={name}").items:
        loop.actuator.delete(namespace, d.metadata.name)
    loop.forget(f"{namespace}/{name}")


@kopf.on.create(GROUP, VERSION, "acceleratorpools")
@kopf.on.update(GROUP, VERSION, "acceleratorpools", field="spec")
@kopf.on.resume(GROUP, VERSION, "acceleratorpools")
def pool_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    _, problems = parse_pool(dict(body))
    if problems:
        _report_invalid(body, patch, problems, memo.loop.clock.now())
    memo.loop.request_run()


def _report_invalid(body: kopf.Body, patch: kopf.Patch, problems: list, now: datetime) -> None:
    """Ready=False with each field, what is wrong and the fix; and a Warning event saying the same."""
    text = "; ".join(str(p) for p in problems)
    patch.status["conditions"] = set_condition(list(body.status.get("conditions") or []), "Ready", False,
                                               "InvalidSpec", text, now)
    kopf.warn(body, reason="InvalidSpec", message=text)


