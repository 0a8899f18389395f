"""kubewire-ipam allocation logic against a temporary data directory (no root needed)."""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from kubewire.cni.plugins import ipam
from kubewire.cni.plugins.ipam import IpamConfig, allocate, check, free_counts, gc, release
from kubewire.cni.protocol import Attachment, CniError, ConfigError, ErrorCode, Route


def config(data_dir: Path, *range_sets: list[dict[str, Any]], **extra: Any) -> IpamConfig:
    raw: dict[str, Any] = {
        "type": "kubewire-ipam",
        "ranges": list(range_sets) or [[{"subnet": "10.244.1.0/24"}]],
        "dataDir": str(data_dir),
    }
    raw.update(extra)
    return IpamConfig.from_config({"name": "net1", "cniVersion": "1.1.0", "ipam": raw})


def addresses(cfg: IpamConfig, container_id: str, ifname: str = "eth0") -> list[str]:
    return [ip.address for ip in allocate(cfg, container_id, ifname).ips]


def test_sequential_allocation_skips_network_and_gateway(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert [addresses(cfg, f"c{i}") for i in range(3)] == [
        ["10.244.1.2/24"],
        ["10.244.1.3/24"],
        ["10.244.1.4/24"],
    ]
    result = allocate(cfg, "c3", "eth0")
    assert result.ips[0].gateway == "10.244.1.1"
    assert result.ips[0].interface is None  # IPAM does not know interfaces


def test_files_use_the_host_local_layout(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    allocate(cfg, "abc", "eth0")
    store = tmp_path / "net1"
    assert (store / "10.244.1.2").read_bytes() == b"abc\r\neth0"
    assert (store / "last_reserved_ip.0").read_text() == "10.244.1.2"
    assert (store / "lock").exists()


def test_allocation_continues_after_the_last_reserved(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    for i in range(3):
        allocate(cfg, f"c{i}", "eth0")
    assert release(cfg, "c0", "eth0") == [ipaddress.ip_address("10.244.1.2")]
    # .2 is free again but allocation moves on, so a stale user of .2 is not confused.
    assert addresses(cfg, "c9") == ["10.244.1.5/24"]


def test_allocation_wraps_around_and_skips_broadcast(tmp_path: Path) -> None:
    cfg = config(tmp_path, [{"subnet": "10.0.0.0/29"}])  # usable .2-.6 (.1 gateway, .7 bcast)
    got = [addresses(cfg, f"c{i}")[0] for i in range(5)]
    assert got == [f"10.0.0.{n}/29" for n in range(2, 7)]
    release(cfg, "c1", "eth0")
    assert addresses(cfg, "again") == ["10.0.0.3/29"]


def test_custom_range_and_gateway(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        [
            {
                "subnet": "10.1.0.0/24",
                "rangeStart": "10.1.0.100",
                "rangeEnd": "10.1.0.101",
                "gateway": "10.1.0.254",
            }
        ],
    )
    first = allocate(cfg, "a", "eth0").ips[0]
    assert (first.address, first.gateway) == ("10.1.0.100/24", "10.1.0.254")
    assert addresses(cfg, "b") == ["10.1.0.101/24"]
    with pytest.raises(CniError, match=re.escape("10.1.0.100-10.1.0.101")):
        allocate(cfg, "c", "eth0")


def test_exhaustion_gives_the_reference_message_and_leaks_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path, [{"subnet": "10.9.0.0/30"}])
    assert addresses(cfg, "first") == ["10.9.0.2/30"]
    with pytest.raises(CniError) as info:
        allocate(cfg, "second", "eth0")
    assert info.value.code == ErrorCode.NO_ADDRESSES
    assert info.value.msg == (
        "failed to allocate for range 0: no IP addresses available in range set: 10.9.0.1-10.9.0.2"
    )
    assert sorted(p.name for p in (tmp_path / "net1").iterdir()) == [
        "10.9.0.2",
        "last_reserved_ip.0",
        "lock",
    ]
    assert free_counts(cfg) == [0]


def test_multiple_ranges_in_a_set_are_used_in_turn(tmp_path: Path) -> None:
    cfg = config(tmp_path, [{"subnet": "10.2.0.0/30"}, {"subnet": "10.3.0.0/30"}])
    assert [addresses(cfg, f"c{i}")[0] for i in range(2)] == ["10.2.0.2/30", "10.3.0.2/30"]
    with pytest.raises(CniError, match=re.escape("10.2.0.1-10.2.0.2,10.3.0.1-10.3.0.2")):
        allocate(cfg, "c3", "eth0")


def test_dual_stack_takes_one_address_per_range_set(tmp_path: Path) -> None:
    cfg = config(tmp_path, [{"subnet": "10.4.0.0/24"}], [{"subnet": "fd00:4::/120"}])
    assert addresses(cfg, "c") == ["10.4.0.2/24", "fd00:4::2/120"]


def test_failure_in_a_later_range_set_releases_the_earlier_address(tmp_path: Path) -> None:
    cfg = config(
        tmp_path, [{"subnet": "10.5.0.0/24"}], [{"subnet": "fd00:5::/120", "rangeEnd": "fd00:5::2"}]
    )
    allocate(cfg, "a", "eth0")
    with pytest.raises(CniError):
        allocate(cfg, "b", "eth0")
    owners = {owner.container_id for _ip, owner in ipam.Store(tmp_path, "net1").allocations()}
    assert owners == {"a"}


def test_release_is_idempotent_and_per_interface(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    allocate(cfg, "c", "eth0")
    allocate(cfg, "c", "net1")
    assert release(cfg, "c", "eth0") == [ipaddress.ip_address("10.244.1.2")]
    assert release(cfg, "c", "eth0") == []
    assert release(cfg, "never-seen", "eth0") == []
    check(cfg, "c", "net1")


def test_release_uses_hints_and_ignores_wrong_ones(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    allocate(cfg, "a", "eth0")
    allocate(cfg, "b", "eth0")
    wrong = (ipaddress.ip_address("10.244.1.2"),)  # belongs to "a"
    assert release(cfg, "b", "eth0", wrong) == [ipaddress.ip_address("10.244.1.3")]
    check(cfg, "a", "eth0", wrong)


def test_release_reads_old_files_without_ifname(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    (tmp_path / "net1").mkdir()
    (tmp_path / "net1" / "10.244.1.7").write_text("oldcontainer\n")
    assert release(cfg, "oldcontainer", "eth0") == [ipaddress.ip_address("10.244.1.7")]


def test_check(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    allocate(cfg, "c", "eth0")
    check(cfg, "c", "eth0")
    with pytest.raises(CniError) as info:
        check(cfg, "c", "eth1")
    assert info.value.code == ErrorCode.CHECK_FAILED
    with pytest.raises(CniError, match=re.escape("10.244.1.9 is not reserved")):
        check(cfg, "c", "eth0", (ipaddress.ip_address("10.244.1.9"),))


def test_gc_releases_what_is_not_valid(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    for cid in ("keep", "drop1", "drop2"):
        allocate(cfg, cid, "eth0")
    released = gc(cfg, frozenset({Attachment("keep", "eth0")}))
    assert sorted(str(ip) for ip in released) == ["10.244.1.3", "10.244.1.4"]
    check(cfg, "keep", "eth0")
    assert gc(cfg, frozenset({Attachment("keep", "eth0")})) == []


def test_free_counts(tmp_path: Path) -> None:
    cfg = config(tmp_path, [{"subnet": "10.6.0.0/29"}])
    assert free_counts(cfg) == [5]
    allocate(cfg, "a", "eth0")
    assert free_counts(cfg) == [4]


@pytest.mark.parametrize(
    ("ranges", "needle"),
    [
        ([[{"subnet": "10.0.0.1/24"}]], "host bits"),
        ([[{"subnet": "10.0.0.0/31"}]], "too small"),
        ([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}]], "outside"),
        ([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.5"}]], "after"),
        ([[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]], "overlap"),
        ([[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]], "mixes"),
        ([], "non-empty"),
        ([[{"subnet": "nonsense"}]], "invalid"),
    ],
)
def test_invalid_ranges(tmp_path: Path, ranges: list[Any], needle: str) -> None:
    raw = {"type": "kubewire-ipam", "ranges": ranges, "dataDir": str(tmp_path)}
    with pytest.raises(ConfigError, match=needle):
        IpamConfig.from_config({"name": "n", "ipam": raw})


def test_legacy_single_subnet_and_routes(tmp_path: Path) -> None:
    raw = {
        "type": "kubewire-ipam",
        "subnet": "10.7.0.0/24",
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.96.0.0/12", "gw": "10.7.0.254"}],
        "dataDir": str(tmp_path),
    }
    cfg = IpamConfig.from_config({"name": "n", "ipam": raw})
    result = allocate(cfg, "c", "eth0")
    assert result.ips[0].address == "10.7.0.2/24"
    assert result.routes == (Route("0.0.0.0/0"), Route("10.96.0.0/12", "10.7.0.254"))


def test_threads_never_get_the_same_address(tmp_path: Path) -> None:
    cfg = config(tmp_path, [{"subnet": "10.8.0.0/23"}])
    got: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            for i in range(30):
                ips = addresses(cfg, f"t{n}-{i}")
                with lock:
                    got.extend(ips)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(got) == 240
    assert len(set(got)) == 240
    assert free_counts(cfg) == [509 - 240]


def _allocate_many(args: tuple[str, int]) -> list[str]:
    data_dir, n = args
    cfg = config(Path(data_dir), [{"subnet": "10.8.0.0/23"}])
    return [addresses(cfg, f"p{n}-{i}")[0] for i in range(20)]


def test_processes_never_get_the_same_address(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        results = pool.map(_allocate_many, [(str(tmp_path), n) for n in range(3)])
    flat = [ip for chunk in results for ip in chunk]
    assert len(flat) == len(set(flat)) == 60


# --- through the plugin entry point ----------------------------------------------------


def run_plugin(command: str, conf: dict[str, Any], container_id: str = "c1") -> tuple[int, Any]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": "/run/netns/unused",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/nonexistent",
    }
    code, out = ipam.run(command, env, json.dumps(conf).encode(), "/proc/self/ns/net")
    return code, json.loads(out) if out else None


def plugin_conf(tmp_path: Path, subnet: str = "10.9.0.0/30", **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": "1.1.0",
        "name": "plug",
        "type": "kubewire-ipam",
        "ipam": {
            "type": "kubewire-ipam",
            "ranges": [[{"subnet": subnet}]],
            "dataDir": str(tmp_path),
        },
    }
    conf.update(extra)
    return conf


def test_plugin_add_status_del(tmp_path: Path) -> None:
    conf = plugin_conf(tmp_path)
    assert run_plugin("STATUS", conf) == (0, None)
    code, result = run_plugin("ADD", conf)
    assert code == 0
    assert result == {
        "cniVersion": "1.1.0",
        "ips": [{"address": "10.9.0.2/30", "gateway": "10.9.0.1"}],
        "dns": {},
    }
    code, error = run_plugin("STATUS", conf)
    assert code == 1 and error["code"] == ErrorCode.PLUGIN_NOT_AVAILABLE
    code, error = run_plugin("ADD", conf, "c2")
    assert code == 1 and error["code"] == ErrorCode.NO_ADDRESSES
    assert "no IP addresses available" in error["msg"]
    assert run_plugin("DEL", {**conf, "prevResult": result}) == (0, None)
    assert run_plugin("DEL", conf) == (0, None)  # idempotent
    assert run_plugin("STATUS", conf) == (0, None)


def test_plugin_gc_requires_the_attachment_list(tmp_path: Path) -> None:
    conf = plugin_conf(tmp_path)
    run_plugin("ADD", conf)
    code, error = run_plugin("GC", conf)
    assert code == 1 and error["code"] == ErrorCode.INVALID_NETWORK_CONFIG
    check(IpamConfig.from_config(conf), "c1", "eth0")  # still there
    gc_conf = {**conf, "cni.dev/valid-attachments": []}
    assert run_plugin("GC", gc_conf) == (0, None)
    assert list(ipam.Store(tmp_path, "plug").allocations()) == []
