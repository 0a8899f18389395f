"""The outside-world resolver's configuration (no root: text only; Unbound itself is
exercised in tests/root/test_upstream_and_masq.py)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from kubewire.lab import upstream
from kubewire.lab.upstream import (
    DEFAULT_RECORDS,
    UnboundConfigError,
    default_records,
    render_unbound_conf,
)

LISTEN = IPv4Address("172.18.0.1")
ALLOW = [IPv4Network("172.18.0.0/16"), IPv4Network("10.244.0.0/16")]


def server_options(conf: str) -> list[tuple[str, str]]:
    """(key, value) pairs of the server: clause, in order."""
    clause = conf.partition("\nserver:\n")[2].partition("\n\n")[0]
    pairs = []
    for line in clause.splitlines():
        assert line.startswith("    "), line
        key, _, value = line.strip().partition(": ")
        pairs.append((key, value))
    return pairs


def values(conf: str, key: str) -> list[str]:
    return [v for k, v in server_options(conf) if k == key]


def test_listens_only_on_the_address_and_loopback(tmp_path: Path) -> None:
    conf = render_unbound_conf(LISTEN, DEFAULT_RECORDS, tmp_path, ALLOW)
    assert values(conf, "interface") == ["172.18.0.1", "127.0.0.1"]
    assert values(conf, "port") == ["53"]
    assert values(conf, "do-udp") == values(conf, "do-tcp") == ["yes"]
    assert values(conf, "do-ip6") == ["no"]
    assert values(conf, "so-reuseport") == ["no"]  # else a second server shares the port


def test_runs_in_the_foreground_without_chroot_or_remote_control(tmp_path: Path) -> None:
    conf = render_unbound_conf(LISTEN, DEFAULT_RECORDS, tmp_path, ALLOW)
    assert values(conf, "num-threads") == ["1"]
    assert values(conf, "do-daemonize") == ["no"]
    assert values(conf, "chroot") == ['""']
    assert "remote-control:\n    control-enable: no\n" in conf
    state = tmp_path.resolve()
    assert values(conf, "logfile") == [f'"{state / "unbound.log"}"']
    assert values(conf, "pidfile") == [f'"{state / "unbound.pid"}"']
    assert values(conf, "use-syslog") == ["no"]


def test_never_queries_anything_real(tmp_path: Path) -> None:
    conf = render_unbound_conf(LISTEN, DEFAULT_RECORDS, tmp_path, ALLOW)
    assert values(conf, "local-zone") == ['"." static']
    assert values(conf, "do-not-query-address") == ["0.0.0.0/0", "::/0"]
    assert values(conf, "module-config") == ['"iterator"']
    for forbidden in ("forward-zone", "stub-zone", "root-hints", "trust-anchor",
                      "auto-trust-anchor-file", "include"):
        assert forbidden not in conf


def test_access_control_refuses_all_but_the_allowed_networks(tmp_path: Path) -> None:
    conf = render_unbound_conf(LISTEN, DEFAULT_RECORDS, tmp_path, ALLOW)
    assert values(conf, "access-control") == [
        "0.0.0.0/0 refuse", "::/0 refuse",
        "10.244.0.0/16 allow", "127.0.0.0/8 allow", "172.18.0.0/16 allow"]


def test_loopback_only(tmp_path: Path) -> None:
    conf = render_unbound_conf(IPv4Address("127.0.0.1"), [], tmp_path)
    assert values(conf, "interface") == ["127.0.0.1"]
    assert values(conf, "access-control")[-1] == "127.0.0.0/8 allow"
    assert values(conf, "local-data") == []


def test_default_records_as_local_data(tmp_path: Path) -> None:
    conf = render_unbound_conf(LISTEN, DEFAULT_RECORDS, tmp_path, ALLOW)
    assert values(conf, "local-data") == [
        "'external.test. 300 IN A 172.18.0.1'",
        "'1.0.18.172.in-addr.arpa. 300 IN PTR external.test.'",
        "'www.example.test. 300 IN A 192.0.2.10'",
        "'mail.example.test. 300 IN AAAA 2001:db8::25'",
        "'example.test. 300 IN MX 10 mail.example.test.'",
        "'example.test. 300 IN TXT \"kubewire outside world\"'",
    ]


def test_the_external_hosts_name_follows_its_address() -> None:
    records = default_records(IPv4Address("192.168.50.1"))
    assert ("external.test", "A", "192.168.50.1") in records
    assert ("192.168.50.1", "PTR", "external.test") in records
    assert default_records(upstream.DEFAULT_EXTERNAL_ADDRESS) == DEFAULT_RECORDS


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    a = render_unbound_conf(LISTEN, DEFAULT_RECORDS, tmp_path, ALLOW)
    b = render_unbound_conf(LISTEN, DEFAULT_RECORDS, tmp_path, list(reversed(ALLOW)))
    assert a == b


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (("a.test", "NOPE", "1.2.3.4"), "unknown type"),
        (("a.test", "A", "not-an-address"), "bad data"),
        (("a.test", "MX", "mail.test"), "bad data"),
        (("a..test", "A", "192.0.2.1"), "bad owner name"),
        (("a.test", "TXT", '"it\'s"'), "single quotes"),
    ],
)
def test_bad_records_are_refused_with_the_record_named(
        tmp_path: Path, record: tuple[str, str, str], message: str) -> None:
    with pytest.raises(UnboundConfigError, match=message) as info:
        render_unbound_conf(LISTEN, [record], tmp_path, ALLOW)
    assert repr(record[0]) in str(info.value)


def test_missing_unbound_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream.shutil, "which", lambda *a, **k: None)
    with pytest.raises(upstream.UnboundNotInstalledError, match="apt-get install -y unbound"):
        upstream.start_upstream(Path("/nonexistent"), LISTEN, Path("/nonexistent"), ALLOW)
