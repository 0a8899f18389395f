"""CniRuntime against fake plugin executables (no namespaces, no root)."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from kubewire.cni.invoke import PluginNotFoundError
from kubewire.cni.protocol import CniError, ConfigError, ErrorCode, parse_conflist
from kubewire.cni.runtime import CniRuntime, load_conflist

FAKE = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
raw = sys.stdin.read()
conf = json.loads(raw) if raw else {{}}
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open({log!r}, "a") as log:
    log.write(json.dumps({{"plugin": name, "env": env, "conf": conf}}) + "\\n")
cmd = env.get("CNI_COMMAND")
if name == "fake-fail" and cmd == "ADD":
    print(json.dumps({{"cniVersion": conf["cniVersion"], "code": 7, "msg": "bad config",
                      "details": "field x"}}))
    sys.exit(1)
if name == "fake-garbage":
    sys.stderr.write("boom\\n")
    sys.exit(2)
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]}}))
elif cmd == "ADD":
    result = conf.get("prevResult") or {{
        "cniVersion": conf["cniVersion"],
        "interfaces": [{{"name": env["CNI_IFNAME"], "sandbox": env["CNI_NETNS"]}}],
        "ips": [{{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0}}],
    }}
    routes = result.get("routes", [])
    result["routes"] = routes + [{{"dst": "10.%d.0.0/16" % (len(routes) + 1)}}]
    print(json.dumps(result))
"""


class Lab:
    def __init__(self, tmp_path: Path):
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.log = tmp_path / "calls.jsonl"
        for name in ("fake-a", "fake-b", "fake-fail", "fake-garbage"):
            path = self.bin / name
            path.write_text(FAKE.format(python=sys.executable, log=str(self.log)))
            path.chmod(0o755)
        self.cache = tmp_path / "cache"
        self.runtime = CniRuntime([tmp_path / "empty", self.bin], self.cache)

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        self.log.unlink()
        return calls


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def netlist(*types: str, version: str = "1.1.0", **extra: Any) -> Any:
    plugins = [
        {"type": t, "capabilities": {"portMappings": True}} if t == "fake-b" else {"type": t}
        for t in types
    ]
    return parse_conflist({"cniVersion": version, "name": "net", "plugins": plugins, **extra})


def test_add_chains_plugins_and_caches_the_result(lab: Lab) -> None:
    conf = netlist("fake-a", "fake-b")
    result = lab.runtime.add(
        conf,
        "c1",
        "/run/netns/pod",
        "eth0",
        {"K8S_POD_NAME": "web"},
        capability_args={"portMappings": [{"hostPort": 8080}], "other": 1},
    )
    assert [r.dst for r in result.routes] == ["10.1.0.0/16", "10.2.0.0/16"]
    a, b = lab.calls()
    assert (a["plugin"], b["plugin"]) == ("fake-a", "fake-b")
    assert a["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/pod",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAME=web",
        "CNI_PATH": f"{lab.runtime.plugin_dirs[0]}:{lab.bin}",
    }
    assert a["conf"]["name"] == "net" and a["conf"]["cniVersion"] == "1.1.0"
    assert "prevResult" not in a["conf"] and "runtimeConfig" not in a["conf"]
    assert b["conf"]["prevResult"]["routes"] == [{"dst": "10.1.0.0/16"}]
    assert b["conf"]["runtimeConfig"] == {"portMappings": [{"hostPort": 8080}]}
    cache = json.loads((lab.cache / "results" / "net-c1-eth0").read_text())
    assert cache["kind"] == "cniCacheV1"
    assert cache["result"] == result.to_wire("1.1.0")
    assert lab.runtime.cached_result("net", "c1", "eth0") == result


def test_delete_runs_in_reverse_with_the_cached_result_and_drops_the_cache(lab: Lab) -> None:
    conf = netlist("fake-a", "fake-b")
    result = lab.runtime.add(conf, "c1", "/run/netns/pod", "eth0")
    lab.calls()
    lab.runtime.delete(conf, "c1", "/run/netns/pod", "eth0")
    b, a = lab.calls()
    assert (b["plugin"], a["plugin"]) == ("fake-b", "fake-a")
    assert a["env"]["CNI_COMMAND"] == "DEL"
    assert a["conf"]["prevResult"] == b["conf"]["prevResult"] == result.to_wire()
    assert not (lab.cache / "results" / "net-c1-eth0").exists()
    lab.runtime.delete(conf, "c1", None, "eth0")  # again, with no cache and no netns
    calls = lab.calls()
    assert all("prevResult" not in c["conf"] for c in calls)
    assert calls[0]["env"]["CNI_NETNS"] == ""


def test_check_uses_the_cached_result(lab: Lab) -> None:
    conf = netlist("fake-a", "fake-b")
    with pytest.raises(CniError) as info:
        lab.runtime.check(conf, "c1", "/run/netns/pod", "eth0")
    assert info.value.code == ErrorCode.UNKNOWN_CONTAINER
    result = lab.runtime.add(conf, "c1", "/run/netns/pod", "eth0")
    lab.calls()
    lab.runtime.check(conf, "c1", "/run/netns/pod", "eth0")
    calls = lab.calls()
    assert [c["plugin"] for c in calls] == ["fake-a", "fake-b"]
    assert all(c["env"]["CNI_COMMAND"] == "CHECK" for c in calls)
    assert all(c["conf"]["prevResult"] == result.to_wire() for c in calls)


def test_check_is_skipped_when_disabled_and_refused_before_0_4_0(lab: Lab) -> None:
    lab.runtime.add(netlist("fake-a", disableCheck=True), "c1", "/n", "eth0")
    lab.calls()
    lab.runtime.check(netlist("fake-a", disableCheck=True), "c1", "/n", "eth0")
    assert lab.calls() == []
    with pytest.raises(CniError, match="does not support CHECK"):
        lab.runtime.check(netlist("fake-a", version="0.3.1"), "c1", "/n", "eth0")


def test_status_only_from_1_1_0(lab: Lab) -> None:
    lab.runtime.status(netlist("fake-a", "fake-b"))
    calls = lab.calls()
    assert [(c["plugin"], c["env"]) for c in calls] == [
        ("fake-a", {"CNI_COMMAND": "STATUS", "CNI_PATH": calls[0]["env"]["CNI_PATH"]}),
        ("fake-b", {"CNI_COMMAND": "STATUS", "CNI_PATH": calls[0]["env"]["CNI_PATH"]}),
    ]
    lab.runtime.status(netlist("fake-a", version="1.0.0"))
    assert lab.calls() == []


def test_gc_deletes_stale_cached_attachments_then_sends_gc(lab: Lab) -> None:
    conf = netlist("fake-a", "fake-b")
    lab.runtime.add(conf, "keep", "/run/netns/keep", "eth0")
    lab.runtime.add(conf, "stale", "/run/netns/stale", "eth0", {"A": "1"})
    lab.calls()
    lab.runtime.gc(conf, [("keep", "eth0")])
    calls = lab.calls()
    dels = [c for c in calls if c["env"]["CNI_COMMAND"] == "DEL"]
    assert [(c["plugin"], c["env"]["CNI_CONTAINERID"]) for c in dels] == [
        ("fake-b", "stale"),
        ("fake-a", "stale"),
    ]
    assert dels[0]["env"]["CNI_NETNS"] == "/run/netns/stale"
    assert dels[0]["env"]["CNI_ARGS"] == "A=1"
    gcs = [c for c in calls if c["env"]["CNI_COMMAND"] == "GC"]
    assert [c["plugin"] for c in gcs] == ["fake-a", "fake-b"]
    valid = [{"containerID": "keep", "ifname": "eth0"}]
    assert gcs[0]["conf"]["cni.dev/valid-attachments"] == valid
    assert gcs[0]["conf"]["cni.dev/attachments"] == valid
    assert [a.container_id for a in lab.runtime.cached_attachments("net")] == ["keep"]


def test_gc_disabled_still_removes_stale_cache_entries(lab: Lab) -> None:
    conf = netlist("fake-a", disableGC=True)
    lab.runtime.add(conf, "stale", "/n", "eth0")
    lab.calls()
    lab.runtime.gc(conf, [])
    assert [c["env"]["CNI_COMMAND"] for c in lab.calls()] == ["DEL"]


def test_plugin_error_is_raised_with_its_code_and_nothing_is_cached(lab: Lab) -> None:
    with pytest.raises(CniError) as info:
        lab.runtime.add(netlist("fake-a", "fake-fail"), "c1", "/n", "eth0")
    err = info.value
    assert (err.code, err.msg, err.details, err.plugin) == (7, "bad config", "field x", "fake-fail")
    assert lab.runtime.cached_attachments() == []


def test_plugin_without_an_error_result(lab: Lab) -> None:
    with pytest.raises(CniError) as info:
        lab.runtime.add(netlist("fake-garbage"), "c1", "/n", "eth0")
    assert info.value.code == ErrorCode.INTERNAL
    assert "status 2" in info.value.msg and "boom" in info.value.details


def test_missing_plugin_names_cni_path(lab: Lab) -> None:
    with pytest.raises(PluginNotFoundError) as info:
        lab.runtime.add(netlist("nope"), "c1", "/n", "eth0")
    assert "'nope' not found in CNI_PATH" in info.value.msg
    assert str(lab.bin) in info.value.msg


def test_version(lab: Lab) -> None:
    info = lab.runtime.version("fake-a")
    assert info.supported_versions == ("1.0.0", "1.1.0")
    (call,) = lab.calls()
    assert call["env"] == {"CNI_COMMAND": "VERSION"}


def test_invalid_runtime_arguments_are_refused_before_any_exec(lab: Lab) -> None:
    with pytest.raises(CniError):
        lab.runtime.add(netlist("fake-a"), "bad id", "/n", "eth0")
    with pytest.raises(CniError):
        lab.runtime.add(netlist("fake-a"), "c1", "/n", "much-too-long-ifname")
    assert lab.calls() == []


def test_many_threads_at_once(lab: Lab) -> None:
    conf = netlist("fake-a")
    errors: list[BaseException] = []

    def one(n: int) -> None:
        try:
            lab.runtime.add(conf, f"c{n}", f"/run/netns/p{n}", "eth0")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(lab.runtime.cached_attachments("net")) == 8


# --- loading ---------------------------------------------------------------------------


def test_load_conflist_takes_the_first_file_by_name(tmp_path: Path) -> None:
    (tmp_path / "20-b.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]})
    )
    (tmp_path / "10-a.conf").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "a", "type": "bridge"})
    )
    (tmp_path / "00-ignored.txt").write_text("not a config")
    conf = load_conflist(tmp_path)
    assert conf.name == "a"
    assert conf.source == str(tmp_path / "10-a.conf")
    os.unlink(tmp_path / "10-a.conf")
    assert load_conflist(tmp_path).name == "b"


def test_load_conflist_errors_name_the_place(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no network configuration"):
        load_conflist(tmp_path)
    (tmp_path / "bad.conflist").write_text('{"cniVersion": "1.0.0", "plugins": []}')
    with pytest.raises(ConfigError, match=re.escape("bad.conflist")):
        load_conflist(tmp_path)


def test_raw_conflist_objects_are_accepted(lab: Lab) -> None:
    raw = {"cniVersion": "1.1.0", "name": "rawnet", "plugins": [{"type": "fake-a"}]}
    result = lab.runtime.add(raw, "c1", "/n", "eth0")
    assert lab.runtime.cached_result("rawnet", "c1", "eth0") == result
    lab.runtime.delete(raw, "c1", "/n", "eth0")
    with pytest.raises(ConfigError):
        lab.runtime.add({"name": "x", "plugins": []}, "c1", "/n", "eth0")
