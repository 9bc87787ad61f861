"""What a period reads from the API server, two ways: listed every period (``Lister``), or listed once and then
kept by watches (``Informers``: client-go's reflector and store, https://pkg.go.dev/k8s.io/client-go/tools/cache).

Both give the objects as the API server sends them (plain dicts, camelCase; ``metadata.managedFields`` dropped),
never the client's generated models: turning 1,000 Pods into models costs more than the request. The operator
(``kilowatt run``) reads from informers, so a steady period makes no list request at all; a ``ControlLoop``
built without one lists, which reads exactly what is in etcd at that moment (tests that write an object and run a
period at once need that).

An informer's copy trails the API server by a watch event (milliseconds). What kilowatt itself writes — a
Deployment it applied, an object it deleted — goes into its copy at once (``applied`` / ``deleted``), so the next
period never plans on its own stale writes.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from kilowatt.api.v1alpha1 import GROUP, VERSION
from kilowatt.controller.actuator import LABEL_MANAGED, LABEL_POOL, LABEL_SERVICE
from kilowatt.controller.routing import HTTP_ROUTE, INFERENCE_POOL

log = logging.getLogger("kilowatt.reads")

LIST_PAGE = 500  # objects per list request (the API server pages them: no single multi-megabyte answer)
WATCH_SECONDS = 300  # the API server ends a watch after this; the informer starts the next one where it left off
RETRY_SECONDS = (0.5, 30.0)  # first and longest wait before listing again after an error (doubling)


@dataclass(frozen=True)
class Source:
    """One kind of object a period reads: an official-client list function (which also watches) and its filter."""

    api_version: str
    kind: str
    list: Callable[..., Any]
    args: tuple = ()
    label_selector: str | None = None

    @property
    def name(self) -> str:
        where = f" in {self.args[2]}" if len(self.args) == 4 else ""
        return f"{self.kind}s{where}" + (f" ({self.label_selector})" if self.label_selector else "")


def sources(core: Any, apps: Any, custom: Any, namespaces: tuple[str, ...] = ()) -> dict[str, list[Source]]:
    """What a period reads, by role. ``namespaces``: InferenceServices only there (empty: every namespace)."""
    routed = f"{LABEL_MANAGED}=kilowatt,{LABEL_SERVICE}"
    services = ([Source(f"{GROUP}/{VERSION}", "InferenceService", custom.list_namespaced_custom_object,
                        (GROUP, VERSION, ns, "inferenceservices")) for ns in namespaces]
                or [Source(f"{GROUP}/{VERSION}", "InferenceService", custom.list_cluster_custom_object,
                           (GROUP, VERSION, "inferenceservices"))])
    out = {
        "pools": [Source(f"{GROUP}/{VERSION}", "AcceleratorPool", custom.list_cluster_custom_object,
                         (GROUP, VERSION, "acceleratorpools"))],
        "services": services,
        "nodes": [Source("v1", "Node", core.list_node)],
        "deployments": [Source("apps/v1", "Deployment", apps.list_deployment_for_all_namespaces,
                               label_selector=LABEL_SERVICE)],
        "pods": [Source("v1", "Pod", core.list_pod_for_all_namespaces, label_selector=LABEL_POOL)],
        "v1/Service": [Source("v1", "Service", core.list_service_for_all_namespaces, label_selector=routed)],
    }
    for kind in (HTTP_ROUTE, INFERENCE_POOL):
        group, version = kind.api_version.split("/")
        out[f"{kind.api_version}/{kind.kind}"] = [Source(kind.api_version, kind.kind, custom.list_cluster_custom_object,
                                                         (group, version, kind.plural), routed)]
    return out


class Reads(Protocol):
    """The objects of one role (``sources``' keys) as a period sees them, and kilowatt's own writes."""

    def objects(self, role: str) -> list[dict]: ...

    def applied(self, obj: dict) -> None: ...

    def deleted(self, api_version: str, kind: str, namespace: str | None, name: str) -> None: ...

    def stop(self) -> None: ...


def _trim(obj: dict, source: Source) -> dict:
    """An object as a period uses it: a list's items carry no apiVersion and kind; managedFields are never read."""
    obj.setdefault("apiVersion", source.api_version)
    obj.setdefault("kind", source.kind)
    (obj.get("metadata") or {}).pop("managedFields", None)
    return obj


def _key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def list_source(source: Source) -> tuple[list[dict], str]:
    """Every object of ``source`` (paged) and the list's resourceVersion, where a watch takes over."""
    items: list[dict] = []
    token = None
    while True:
        response = source.list(*source.args, label_selector=source.label_selector, limit=LIST_PAGE,
                               _continue=token, _preload_content=False)
        page = json.loads(response.data)
        items += [_trim(o, source) for o in page.get("items") or []]
        meta = page.get("metadata") or {}
        token = meta.get("continue")
        if not token:
            return items, meta.get("resourceVersion") or ""


class Lister:
    """Reads by listing, every time it is asked: what etcd holds at that moment."""

    def __init__(self, core: Any, apps: Any, custom: Any, namespaces: tuple[str, ...] = ()) -> None:
        self._sources = sources(core, apps, custom, namespaces)

    def objects(self, role: str) -> list[dict]:
        return [o for source in self._sources[role] for o in list_source(source)[0]]

    def applied(self, obj: dict) -> None:
        pass

    def deleted(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        pass

    def stop(self) -> None:
        pass


class _Expired(Exception):
    """The watch's resourceVersion is gone from the API server's history (410): list again."""


def _newer(a: dict, b: dict | None) -> bool:
    """Whether ``a`` is at least as new as ``b``. resourceVersions are opaque to clients, but every API server
    backed by etcd writes its revision, a number; where either is not one, the later arrival wins."""
    if b is None:
        return True
    ra, rb = (x.get("metadata", {}).get("resourceVersion") or "" for x in (a, b))
    return int(ra) >= int(rb) if ra.isdigit() and rb.isdigit() else True


class Informer:
    """One kind's objects kept by list-then-watch on a daemon thread. Re-lists after the watch's history expires
    (410) or an error (the API server restarting), waiting 0.5 s doubling to 30 s between tries; until its first
    list completes it is not ``synced``."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._items: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._tried = threading.Event()  # the first list returned or failed
        self.error: Exception | None = None  # why the last list or watch failed (None once a list succeeds)
        self._stopping = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"kilowatt-watch-{source.kind}", daemon=True)
        self.lists = 0  # full lists so far: 1 when nothing went wrong

    def start(self) -> Informer:
        self._thread.start()
        return self

    def wait_synced(self, timeout_seconds: float) -> bool:
        """Whether the copy holds a complete list: waits for the first list to return (at most
        ``timeout_seconds``), not for retries after it failed."""
        self._tried.wait(timeout_seconds)
        return self._synced.is_set()

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def objects(self) -> list[dict]:
        with self._lock:
            return list(self._items.values())

    def record(self, obj: dict) -> None:
        """kilowatt's own write, as the API server answered it: kept unless the watch already has a newer one."""
        obj = _trim(obj, self.source)
        with self._lock:
            if _newer(obj, self._items.get(_key(obj))):
                self._items[_key(obj)] = obj

    def drop(self, namespace: str | None, name: str) -> None:
        with self._lock:
            self._items.pop((namespace or "", name), None)

    def stop(self) -> None:
        self._stopping.set()
        sock = getattr(getattr(self._response, "connection", None), "sock", None)
        if sock is not None:
            try:  # ends the watch thread's blocking read (closing from here would wait for that read to end)
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # a connection already gone
                pass

    def _run(self) -> None:
        wait = RETRY_SECONDS[0]
        while not self._stopping.is_set():
            try:
                items, version = list_source(self.source)
                self.lists += 1
                with self._lock:
                    self._items = {_key(o): o for o in items}
                self.error = None
                self._synced.set()
                self._tried.set()
                wait = RETRY_SECONDS[0]
                while not self._stopping.is_set():
                    version = self._watch(version)
            except _Expired:
                log.info("watch of %s expired: listing again", self.source.name)
            except Exception as exc:  # noqa: BLE001 - the API server away, a CRD not (yet) served: try again
                if self._stopping.is_set():
                    return
                self.error = exc
                self._tried.set()
                log.warning("watch of %s failed (%s): listing again in %.1f s", self.source.name,
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__, wait)
                self._stopping.wait(wait)
                wait = min(wait * 2, RETRY_SECONDS[1])

    def _watch(self, version: str) -> str:
        """One watch request from ``version`` until the API server ends it; returns where the next one starts."""
        source = self.source
        self._response = source.list(*source.args, label_selector=source.label_selector, watch=True,
                                     resource_version=version, allow_watch_bookmarks=True,
                                     timeout_seconds=WATCH_SECONDS, _preload_content=False,
                                     _request_timeout=(10, WATCH_SECONDS + 30))
        try:
            status = getattr(self._response, "status", 200)
            if isinstance(status, int) and not 200 <= status < 300:  # refused before any event: not a watch
                body = getattr(self._response, "data", b"") or b""
                if status == 410:
                    raise _Expired()
                raise ApiException(status=status, reason=body.decode("utf-8", "replace")[:300])
            for line in iter_resp_lines(self._response):
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired()
                    raise ApiException(status=obj.get("code"), reason=f"{obj.get('reason')}: {obj.get('message')}")
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED"):
                    self.record(obj)
                elif kind == "DELETED":
                    with self._lock:
                        self._items.pop(_key(obj), None)
                if self._stopping.is_set():
                    break
        finally:
            response, self._response = self._response, None
            response.release_conn()
        return version


class Informers:
    """Reads from watches: each role's informers start the first time it is asked for, and the first ask waits
    (up to ``sync_seconds``) for their first list; after that, asking reads memory. A copy that was complete once
    is read while its watch is re-established (it may trail the API server until then, as any watch cache does).
    Give them clients of their own connection pool: each watch holds a connection. The dicts returned are the
    copy itself, shared by every period: read them, never change them."""

    def __init__(self, core: Any, apps: Any, custom: Any, namespaces: tuple[str, ...] = (),
                 sync_seconds: float = 30.0) -> None:
        self._sources = sources(core, apps, custom, namespaces)
        self._informers: dict[str, list[Informer]] = {}
        self._lock = threading.Lock()
        self.sync_seconds = sync_seconds

    def informers(self, role: str) -> list[Informer]:
        """The informers of one role (started if they were not)."""
        return self._started(role)

    def _started(self, role: str) -> list[Informer]:
        with self._lock:
            if role not in self._informers:
                self._informers[role] = [Informer(s).start() for s in self._sources[role]]
            return self._informers[role]

    def objects(self, role: str) -> list[dict]:
        out = []
        for informer in self._started(role):
            if not informer.wait_synced(self.sync_seconds):
                # Never listed yet: the period cannot know what exists. Its error (the API server away, RBAC
                # refusing the list) fails this period as a list would; the informer keeps trying.
                raise informer.error or TimeoutError(f"the first list of {informer.source.name} did not complete "
                                                     f"in {self.sync_seconds:g} s")
            out += informer.objects()
        return out

    def _matching(self, api_version: str, kind: str) -> Iterable[Informer]:
        with self._lock:
            started = [i for informers in self._informers.values() for i in informers]
        return [i for i in started if i.source.api_version == api_version and i.source.kind == kind]

    def applied(self, obj: dict) -> None:
        for informer in self._matching(obj.get("apiVersion", ""), obj.get("kind", "")):
            namespace = (obj.get("metadata") or {}).get("namespace")
            if len(informer.source.args) == 4 and informer.source.args[2] != namespace:
                continue
            informer.record(json.loads(json.dumps(obj)))

    def deleted(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        for informer in self._matching(api_version, kind):
            informer.drop(namespace, name)

    @property
    def synced(self) -> bool:
        with self._lock:
            return all(i.synced for informers in self._informers.values() for i in informers)

    def stop(self) -> None:
        with self._lock:
            for informers in self._informers.values():
                for informer in informers:
                    informer.stop()
