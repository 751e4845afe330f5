"""The object store on its own: watch history expiry (410), status rules, no-op writes."""

from __future__ import annotations

import threading

import pytest

from sandbox.k8s import resources as r
from sandbox.k8s.errors import Gone
from sandbox.k8s.patching import json_patch, strategic_merge
from sandbox.k8s.store import Store


def _cm(name: str) -> dict:
    return {"metadata": {"name": name}, "data": {"k": "v"}}


def test_watch_from_a_compacted_resource_version_is_gone():
    store = Store(history=5)
    store.create(r.NAMESPACES, None, {"metadata": {"name": "ns"}})
    start = store.resource_version
    for i in range(10):
        store.create(r.CONFIGMAPS, "ns", _cm(f"c{i}"))
    with pytest.raises(Gone) as exc_info:
        next(store.watch(r.CONFIGMAPS, "ns", resource_version=start, timeout=1))
    assert exc_info.value.status()["code"] == 410


def test_watch_reports_objects_leaving_and_entering_a_selector():
    store = Store()
    store.create(r.NAMESPACES, None, {"metadata": {"name": "ns"}})
    start = store.resource_version
    store.create(r.CONFIGMAPS, "ns", {"metadata": {"name": "a", "labels": {"color": "blue"}}})
    store.mutate(r.CONFIGMAPS, "ns", "a", lambda o: o["metadata"]["labels"].update(color="green"))
    store.mutate(r.CONFIGMAPS, "ns", "a", lambda o: o["metadata"]["labels"].update(color="blue"))
    stop = threading.Event()
    events = []
    for kind, obj in store.watch(r.CONFIGMAPS, "ns", resource_version=start,
                                 label_selector="color=blue", timeout=5, stop=stop):
        events.append((kind, obj["metadata"]["labels"]["color"]))
        if len(events) == 3:
            stop.set()
            break
    assert events == [("ADDED", "blue"), ("DELETED", "green"), ("ADDED", "blue")]


def test_noop_writes_keep_the_resource_version_and_status_writes_keep_generation():
    store = Store()
    events: list[str] = []
    # (a new namespace also gets its "default" ServiceAccount: not counted here)
    store.subscribe(lambda kind, res, obj: res == r.SERVICE_ACCOUNTS or events.append(kind))
    store.create(r.NAMESPACES, None, {"metadata": {"name": "ns"}})
    dep = store.create(r.DEPLOYMENTS, "ns", {
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    same = store.mutate(r.DEPLOYMENTS, "ns", "d", lambda o: None)
    assert same["metadata"]["resourceVersion"] == dep["metadata"]["resourceVersion"]
    status = store.mutate(r.DEPLOYMENTS, "ns", "d",
                          lambda o: o["status"].update(replicas=3), subresource="status")
    assert status["metadata"]["generation"] == 1 and status["status"]["replicas"] == 3
    scaled = store.mutate(r.DEPLOYMENTS, "ns", "d", lambda o: o["spec"].update(replicas=3))
    assert scaled["metadata"]["generation"] == 2
    assert events == ["ADDED", "ADDED", "MODIFIED", "MODIFIED"]


def test_strategic_merge_keys_and_directives():
    doc = {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}],
                    "containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}],
                    "finalizers": ["one"]}}
    patched = strategic_merge(doc, {"spec": {
        "ports": [{"port": 80, "targetPort": 8080}],
        "containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}],
        "finalizers": ["two"],
        "$setElementOrder/containers": [{"name": "a"}]}})
    assert patched["spec"]["ports"] == [{"port": 80, "name": "http", "targetPort": 8080},
                                        {"port": 443, "name": "https"}]
    assert patched["spec"]["containers"][0]["env"] == [{"name": "X", "value": "1"},
                                                       {"name": "Y", "value": "2"}]
    assert patched["spec"]["finalizers"] == ["one", "two"]
    replaced = strategic_merge(doc, {"spec": {"$patch": "replace", "ports": []}})
    assert replaced == {"spec": {"ports": []}}


def test_json_patch_move_copy_and_append():
    doc = {"a": [1, 2], "b": {"c": 1}}
    out = json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3},
                           {"op": "copy", "from": "/b", "path": "/d"},
                           {"op": "move", "from": "/b/c", "path": "/e"}])
    assert out == {"a": [1, 2, 3], "b": {}, "d": {"c": 1}, "e": 1}
    assert doc == {"a": [1, 2], "b": {"c": 1}}


def test_concurrent_patches_are_atomic_and_stale_updates_conflict():
    from concurrent.futures import ThreadPoolExecutor

    from sandbox.k8s.errors import Conflict

    store = Store()
    store.create(r.NAMESPACES, None, {"metadata": {"name": "ns"}})
    first = store.create(r.CONFIGMAPS, "ns", {"metadata": {"name": "c"}, "data": {}})

    def add(i: int) -> None:
        store.patch(r.CONFIGMAPS, "ns", "c",
                    lambda cur: strategic_merge(cur, {"data": {f"k{i}": str(i)}}))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(add, range(40)))
    final = store.get(r.CONFIGMAPS, "ns", "c")
    assert len(final["data"]) == 40
    assert int(final["metadata"]["resourceVersion"]) == int(
        first["metadata"]["resourceVersion"]) + 40
    with pytest.raises(Conflict):
        store.update(r.CONFIGMAPS, "ns", first)


def test_uncopied_reads_stay_as_they_were_read_whatever_is_written_after():
    """``copy=False`` (the Service proxy's reads) relies on writes replacing stored objects."""
    import copy

    store = Store()
    store.create(r.NAMESPACES, None, {"metadata": {"name": "ns"}})
    store.create(r.SERVICES, "ns", {"metadata": {"name": "s"}, "spec": {
        "selector": {"color": "blue"}, "ports": [{"port": 80}]}})
    read = store.get(r.SERVICES, "ns", "s", copy=False)
    listed, _ = store.list(r.SERVICES, "ns", copy=False)
    assert listed[0] is read  # the stored object itself, not a copy
    assert store.get(r.SERVICES, "ns", "s") is not read  # the default still copies
    before = copy.deepcopy(read)

    store.mutate(r.SERVICES, "ns", "s", lambda o: o["spec"]["selector"].update(color="green"))
    store.patch(r.SERVICES, "ns", "s", lambda o: {**o, "metadata": {
        **o["metadata"], "labels": {"x": "y"}}})
    current = store.get(r.SERVICES, "ns", "s")
    store.update(r.SERVICES, "ns", {**current, "spec": {**current["spec"], "ports": [
        {"port": 81}]}})
    store.delete(r.SERVICES, "ns", "s")

    assert read == before
    assert current["spec"]["selector"] == {"color": "green"}
