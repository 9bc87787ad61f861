"""The informer's rules, against a scripted API server (the real one is in tests/integration/test_reads.py): a
watch's expired history (410) and a broken watch are answered by a fresh list; a period never reads a copy that
was never complete; kilowatt's own write is kept until the watch brings something newer."""

from __future__ import annotations

import json
import threading

import pytest
from kubernetes.client.rest import ApiException

from kilowatt.controller.reads import Informer, Informers, Source


class _Response:
    def __init__(self, body: dict | None = None, events: list[dict] | None = None, then: threading.Event | None = None,
                 status: int = 200):
        self.data = json.dumps(body).encode() if body is not None else b""
        self.status = status
        self._events, self._then = events or [], then

    def stream(self, amt=None, decode_content=False):
        for e in self._events:
            yield (json.dumps(e) + "\n").encode()
        if self._then is not None:  # a watch that stays open until the test lets it end
            self._then.wait(5)

    def release_conn(self) -> None:
        pass


def _obj(name: str, version: int, **spec) -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": str(version),
                         "managedFields": [{"manager": "x"}]}, "spec": spec}


class ScriptedServer:
    """Answers list and watch calls from scripts; records what was asked."""

    def __init__(self, lists: list, watches: list) -> None:
        self.lists, self.watches = lists, watches
        self.asked: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()

    def __call__(self, *args, watch=False, resource_version=None, **kwargs):
        with self.lock:
            self.asked.append(("watch" if watch else "list", resource_version))
            script = self.watches if watch else self.lists
            answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _list(version: int, *objects: dict) -> _Response:
    return _Response({"metadata": {"resourceVersion": str(version)}, "items": list(objects)})


def _wait(predicate, seconds: float = 5.0) -> None:
    done = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")


def test_an_expired_watch_lists_again_and_the_copy_follows_the_events():
    hold = threading.Event()
    server = ScriptedServer(
        lists=[_list(10, _obj("a", 5)), _list(20, _obj("a", 15, x=2), _obj("c", 18))],
        watches=[_Response(events=[{"type": "ADDED", "object": _obj("b", 11)},
                                   {"type": "MODIFIED", "object": _obj("a", 12, x=1)},
                                   {"type": "DELETED", "object": _obj("b", 13)},
                                   {"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}}]),
                 _Response(events=[], then=hold)])
    informer = Informer(Source("v1", "Thing", server)).start()
    try:
        _wait(lambda: informer.lists == 2)
        _wait(lambda: ("watch", "20") in server.asked)
        held = {o["metadata"]["name"]: o for o in informer.objects()}
        assert set(held) == {"a", "c"} and held["a"]["spec"] == {"x": 2}  # the second list, not stale events
        assert held["a"]["kind"] == "Thing" and held["a"]["apiVersion"] == "v1"
        assert "managedFields" not in held["a"]["metadata"]
        # The first watch started where the first list ended; after the 410 a list, then a watch from it.
        assert server.asked[:3] == [("list", None), ("watch", "10"), ("list", None)]
    finally:
        hold.set()
        informer.stop()


def test_a_period_never_reads_a_copy_that_was_never_complete():
    refused = ApiException(status=403, reason="Forbidden")
    server = ScriptedServer(lists=[refused], watches=[_Response()])
    informers = Informers(_Fake(), _Fake(), _Fake(), sync_seconds=5.0)
    informers._sources = {"things": [Source("v1", "Thing", server)]}  # one role, scripted
    try:
        with pytest.raises(ApiException) as raised:
            informers.objects("things")
        assert raised.value.status == 403  # the list's own error, at once: not an empty list
    finally:
        informers.stop()


class _Fake:
    """A client whose list functions are never called (the test replaces the sources)."""

    def __getattr__(self, name):
        return lambda *a, **k: None


def test_kilowatts_own_write_is_kept_until_the_watch_brings_a_newer_version():
    informer = Informer(Source("apps/v1", "Deployment", lambda *a, **k: None))  # not started: no watch
    informer.record(_obj("d", 30, replicas=3))
    informer.record(_obj("d", 25, replicas=2))  # a late event for an older version
    assert informer.objects()[0]["spec"] == {"replicas": 3}
    informer.record(_obj("d", 31, replicas=4))
    assert informer.objects()[0]["spec"] == {"replicas": 4}
    informer.drop("ns", "d")
    assert informer.objects() == []


def test_a_watch_refused_outright_is_an_error_that_waits_not_a_watch_asked_again_at_once():
    hold = threading.Event()
    refused = _Response({"kind": "Status", "code": 403, "message": "forbidden"}, status=403)
    server = ScriptedServer(lists=[_list(10, _obj("a", 5))], watches=[refused, _Response(events=[], then=hold)])
    informer = Informer(Source("v1", "Thing", server)).start()
    try:
        _wait(lambda: informer.lists == 2)  # listed again after the refusal, then watched
        _wait(lambda: sum(1 for kind, _ in server.asked if kind == "watch") == 2)
        watches = sum(1 for kind, _ in server.asked if kind == "watch")
        assert watches == 2, server.asked  # one refused, one open: no loop of refused watches
        assert [o["metadata"]["name"] for o in informer.objects()] == ["a"]
    finally:
        hold.set()
        informer.stop()
