from __future__ import annotations

import asyncio

import pytest

from kubewire.store.store import Conflict, NotFound, ObjectStore, WatchEvent


def pod(name: str, ns: str = "default", **spec: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": dict(spec)}


def test_put_get_list_sorted_and_filtered() -> None:
    s = ObjectStore()
    s.put(pod("b"))
    s.put(pod("a"))
    s.put(pod("c", ns="other"))
    assert [p["metadata"]["name"] for p in s.list("Pod")] == ["a", "b", "c"]
    assert [p["metadata"]["name"] for p in s.list("Pod", namespace="default")] == ["a", "b"]
    got = s.get("Pod", "default", "a")
    assert got is not None and got["metadata"]["generation"] == 1


def test_versions_and_generation() -> None:
    s = ObjectStore()
    first = s.put(pod("a", nodeName="n1"))
    v1 = int(first["metadata"]["resourceVersion"])
    same_spec = s.put({**pod("a", nodeName="n1"), "metadata": {"name": "a", "namespace":
                                                               "default", "labels": {"x": "1"}}})
    assert int(same_spec["metadata"]["resourceVersion"]) > v1
    assert same_spec["metadata"]["generation"] == 1
    changed = s.put(pod("a", nodeName="n2"))
    assert changed["metadata"]["generation"] == 2
    assert changed["metadata"]["creationTimestamp"] == first["metadata"]["creationTimestamp"]


def test_put_copies_input() -> None:
    s = ObjectStore()
    obj = pod("a")
    s.put(obj)
    obj["spec"]["nodeName"] = "mutated"  # type: ignore[index]
    stored = s.get("Pod", "default", "a")
    assert stored is not None and "nodeName" not in stored["spec"]


def test_status_update_keeps_spec_and_delete_raises_when_missing() -> None:
    s = ObjectStore()
    s.put(pod("a"))
    s.update_status("Pod", "default", "a", {"phase": "Running"})
    s.put(pod("a", nodeName="n1"))  # an apply without status keeps the status
    got = s.get("Pod", "default", "a")
    assert got is not None and got["status"] == {"phase": "Running"}
    s.delete("Pod", "default", "a")
    with pytest.raises(NotFound):
        s.delete("Pod", "default", "a")
    with pytest.raises(NotFound):
        s.update_status("Pod", "default", "a", {})


def test_watch_lists_existing_then_streams_in_order() -> None:
    async def scenario() -> list[tuple[str, str]]:
        s = ObjectStore()
        s.put(pod("before"))
        w = s.watch(["Pod"])
        s.put(pod("after"))
        s.update_status("Pod", "default", "after", {"phase": "Running"})
        s.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
        s.delete("Pod", "default", "before")
        events: list[WatchEvent] = [await w.__anext__()]
        events += w.drain()
        w.close()
        s.put(pod("unseen"))
        assert w.drain() == []
        return [(e.type, e.obj["metadata"]["name"]) for e in events]

    assert asyncio.run(scenario()) == [
        ("ADDED", "before"), ("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "before")]


def test_generation_tracks_content_of_kinds_without_spec() -> None:
    s = ObjectStore()
    base = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abcde", "namespace": "default"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.5"]}]}
    assert s.put(base)["metadata"]["generation"] == 1
    assert s.put(base)["metadata"]["generation"] == 1
    changed = {**base, "endpoints": [{"addresses": ["10.244.0.6"]}]}
    assert s.put(changed)["metadata"]["generation"] == 2


def test_create_refuses_an_existing_key_and_changes_nothing() -> None:
    store = ObjectStore()
    first = {"kind": "BlockAffinity", "metadata": {"name": "node-1-10-244-0-0-26"},
             "spec": {"node": "node-1"}}
    stored = store.create(first)
    assert stored["metadata"]["resourceVersion"] == "1"
    with pytest.raises(Conflict, match="blockaffinity/node-1-10-244-0-0-26 already exists"):
        store.create({**first, "spec": {"node": "node-2"}})
    assert store.get("BlockAffinity", "", "node-1-10-244-0-0-26")["spec"] == {"node": "node-1"}
