"""CNI protocol: versions, errors, results, env, network configuration, plugin skeleton."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubewire.cni.plugins.skel import PluginRequest, dispatch
from kubewire.cni.protocol import (
    DNS,
    LEGACY_ATTACHMENTS_KEY,
    SUPPORTED_VERSIONS,
    VALID_ATTACHMENTS_KEY,
    Attachment,
    CniError,
    Command,
    ConfigError,
    ErrorCode,
    Interface,
    IPConfig,
    PluginEnv,
    Result,
    Route,
    VersionInfo,
    format_cni_args,
    gc_extra,
    negotiate_version,
    parse_cni_args,
    parse_conflist,
    plugin_config,
    valid_attachments,
    validate_ifname,
)

FULL = Result(
    cni_version="1.1.0",
    interfaces=(
        Interface("cni0", "aa:bb:cc:dd:ee:01"),
        Interface("veth1234abcd", "aa:bb:cc:dd:ee:02"),
        Interface("eth0", "aa:bb:cc:dd:ee:03", "/run/netns/pod", mtu=1400),
    ),
    ips=(
        IPConfig("10.244.1.5/24", "10.244.1.1", 2),
        IPConfig("fd00::5/64", "fd00::1", 2),
    ),
    routes=(Route("0.0.0.0/0", "10.244.1.1", mtu=1400, priority=10), Route("10.96.0.0/12")),
    dns=DNS(("10.96.0.10",), "cluster.local", ("svc.cluster.local",), ("ndots:5",)),
)


# --- versions -------------------------------------------------------------------------


def test_negotiation_prefers_highest_common_version() -> None:
    assert negotiate_version("1.0.0", ["1.0.0", "1.1.0", "2.0.0"]) == "1.1.0"
    assert negotiate_version("0.4.0") == "0.4.0"
    assert negotiate_version("1.0.0", ["9.9.9"]) == "1.0.0"


def test_negotiation_rejects_unknown_version_with_code_1() -> None:
    with pytest.raises(CniError) as info:
        negotiate_version("0.2.0")
    assert info.value.code == ErrorCode.INCOMPATIBLE_VERSION


def test_well_known_error_codes_match_the_spec() -> None:
    assert [int(c) for c in list(ErrorCode)[:10]] == [1, 2, 3, 4, 5, 6, 7, 11, 50, 51]


# --- errors ---------------------------------------------------------------------------


def test_error_round_trip() -> None:
    err = CniError(ErrorCode.TRY_AGAIN_LATER, "busy", "retry in a second")
    wire = json.loads(err.to_json("1.0.0"))
    assert wire == {
        "cniVersion": "1.0.0",
        "code": 11,
        "msg": "busy",
        "details": "retry in a second",
    }
    back = CniError.from_wire(err.to_json(), plugin="x")
    assert (back.code, back.msg, back.details, back.plugin) == (
        11,
        "busy",
        "retry in a second",
        "x",
    )
    assert "x: busy" in str(back) and "[CNI error 11]" in str(back)


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'{"msg": "no code"}'])
def test_error_from_garbage_is_a_decode_failure(raw: bytes) -> None:
    with pytest.raises(CniError) as info:
        CniError.from_wire(raw)
    assert info.value.code == ErrorCode.DECODE_FAILURE


# --- results --------------------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_result_round_trip_per_version(version: str) -> None:
    wire = FULL.to_wire(version)
    back = Result.from_wire(json.dumps(wire))
    assert back.to_wire(version) == wire
    assert back.cni_version == version
    assert [ip.address for ip in back.ips] == ["10.244.1.5/24", "fd00::5/64"]


def test_result_1_1_0_keeps_new_fields_and_older_versions_drop_them() -> None:
    new = FULL.to_wire("1.1.0")
    assert new["interfaces"][2]["mtu"] == 1400
    assert new["routes"][0] == {"dst": "0.0.0.0/0", "gw": "10.244.1.1", "mtu": 1400, "priority": 10}
    old = FULL.to_wire("1.0.0")
    assert "mtu" not in old["interfaces"][2]
    assert old["routes"][0] == {"dst": "0.0.0.0/0", "gw": "10.244.1.1"}
    assert "version" not in old["ips"][0]


def test_pre_1_0_results_carry_ip_version() -> None:
    wire = FULL.to_wire("0.4.0")
    assert [ip["version"] for ip in wire["ips"]] == ["4", "6"]
    back = Result.from_wire(wire)
    assert back.ips == FULL.ips
    assert back.routes == (Route("0.0.0.0/0", "10.244.1.1"), Route("10.96.0.0/12"))
    assert back.interfaces[2] == Interface("eth0", "aa:bb:cc:dd:ee:03", "/run/netns/pod")


def test_empty_lists_are_omitted_but_dns_is_always_there() -> None:
    assert Result("1.0.0").to_wire() == {"cniVersion": "1.0.0", "dns": {}}


@pytest.mark.parametrize(
    "wire",
    [
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]},  # no prefix
        {"cniVersion": "1.0.0", "ips": [{"address": "bogus/24"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/24", "interface": 3}]},
        {"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]},
        {"cniVersion": "1.0.0", "ips": "nope"},
        {"ips": []},  # no version
    ],
)
def test_invalid_results_are_rejected(wire: dict[str, Any]) -> None:
    with pytest.raises(CniError) as info:
        Result.from_wire(json.dumps(wire))
    assert info.value.code in (ErrorCode.DECODE_FAILURE, ErrorCode.INCOMPATIBLE_VERSION)


def test_version_info_round_trip() -> None:
    info = VersionInfo("1.1.0", ("1.0.0", "1.1.0"))
    assert VersionInfo.from_wire(info.to_json()) == info


# --- environment ----------------------------------------------------------------------


def test_env_round_trip() -> None:
    env = PluginEnv(
        Command.ADD, "c1", "/run/netns/p", "eth0", (("K8S_POD_NAME", "web"),), ("/a", "/b")
    )
    raw = env.to_env()
    assert raw == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/p",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAME=web",
        "CNI_PATH": "/a:/b",
    }
    assert PluginEnv.from_env(raw) == env


def test_missing_env_is_code_4_and_names_the_variables() -> None:
    with pytest.raises(CniError) as info:
        PluginEnv.from_env({"CNI_COMMAND": "ADD", "CNI_IFNAME": "eth0"})
    assert info.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert "CNI_CONTAINERID" in info.value.msg and "CNI_NETNS" in info.value.msg


def test_del_does_not_need_a_netns_and_gc_needs_only_the_path() -> None:
    env = PluginEnv.from_env(
        {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}
    )
    assert env.netns == ""
    assert PluginEnv.from_env({"CNI_COMMAND": "GC", "CNI_PATH": "/x"}).path == ("/x",)


@pytest.mark.parametrize("ifname", ["", ".", "..", "a" * 16, "eth/0", "eth:0", "eth 0"])
def test_bad_ifnames(ifname: str) -> None:
    with pytest.raises(CniError):
        validate_ifname(ifname)


def test_bad_container_id_and_command() -> None:
    base = {"CNI_COMMAND": "ADD", "CNI_NETNS": "/n", "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}
    with pytest.raises(CniError, match="CNI_CONTAINERID"):
        PluginEnv.from_env({**base, "CNI_CONTAINERID": "-starts-with-dash"})
    with pytest.raises(CniError, match="CNI_COMMAND"):
        PluginEnv.from_env({**base, "CNI_COMMAND": "FROB"})


def test_cni_args() -> None:
    assert parse_cni_args("A=1;B=two;;C=") == (("A", "1"), ("B", "two"), ("C", ""))
    assert format_cni_args({"A": "1", "B": "2"}) == "A=1;B=2"
    with pytest.raises(CniError):
        parse_cni_args("novalue")
    with pytest.raises(CniError):
        format_cni_args([("A", "x;y")])


# --- configuration --------------------------------------------------------------------


def conflist(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "kubewire-pods",
        "plugins": [
            {"type": "kubewire-bridge", "bridge": "cni0", "capabilities": {"portMappings": True}},
            {"type": "tuning"},
        ],
    }
    base.update(overrides)
    return base


def test_conflist_parses() -> None:
    parsed = parse_conflist(json.dumps(conflist(disableCheck=True)).encode(), "x.conflist")
    assert parsed.name == "kubewire-pods"
    assert parsed.cni_version == "1.0.0"
    assert [p.type for p in parsed.plugins] == ["kubewire-bridge", "tuning"]
    assert parsed.disable_check and not parsed.disable_gc
    assert parsed.plugins[0].capabilities == frozenset({"portMappings"})


def test_conflist_negotiates_cni_versions() -> None:
    parsed = parse_conflist(conflist(cniVersions=["1.0.0", "1.1.0"]))
    assert parsed.cni_version == "1.1.0"


def test_single_plugin_conf_becomes_a_list() -> None:
    parsed = parse_conflist({"cniVersion": "0.4.0", "name": "n1", "type": "bridge"})
    assert [p.type for p in parsed.plugins] == ["bridge"]
    assert parsed.raw["plugins"][0]["type"] == "bridge"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"name": None}, "'name'"),
        ({"name": "-bad"}, "'name'"),
        ({"cniVersion": None}, "cniVersion"),
        ({"plugins": []}, "plugins"),
        ({"plugins": [{"bridge": "x"}]}, "type"),
        ({"plugins": [{"type": "../evil"}]}, "type"),
        ({"disableCheck": "yes"}, "disableCheck"),
        ({"cniVersions": "1.0.0"}, "cniVersions"),
    ],
)
def test_invalid_conflists(overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_conflist(conflist(**overrides), "net.conflist")
    assert needle in info.value.msg
    assert "net.conflist" in info.value.msg
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG


def test_unsupported_version_in_conflist_is_code_1() -> None:
    with pytest.raises(ConfigError) as info:
        parse_conflist(conflist(cniVersion="0.1.0"))
    assert info.value.code == ErrorCode.INCOMPATIBLE_VERSION


def test_conflist_that_is_not_json() -> None:
    with pytest.raises(CniError) as info:
        parse_conflist(b"{nope", "f.conflist")
    assert info.value.code == ErrorCode.DECODE_FAILURE


def test_plugin_config_injects_name_version_prev_result_and_runtime_config() -> None:
    parsed = parse_conflist(conflist())
    prev = Result("1.1.0", ips=(IPConfig("10.0.0.2/24", "10.0.0.1"),))
    caps = {"portMappings": [{"hostPort": 80}], "bandwidth": {"rate": 1}}
    first = json.loads(
        plugin_config(parsed, parsed.plugins[0], prev_result=prev, capability_args=caps)
    )
    assert first["name"] == "kubewire-pods" and first["cniVersion"] == "1.0.0"
    assert first["prevResult"] == prev.to_wire("1.0.0")
    assert first["runtimeConfig"] == {"portMappings": [{"hostPort": 80}]}
    second = json.loads(plugin_config(parsed, parsed.plugins[1], capability_args=caps))
    assert "runtimeConfig" not in second and "prevResult" not in second
    assert "prevResult" not in parsed.plugins[0].config  # the list itself is untouched


def test_gc_attachments_both_keys() -> None:
    extra = gc_extra([Attachment("c1", "eth0")])
    assert extra[VALID_ATTACHMENTS_KEY] == [{"containerID": "c1", "ifname": "eth0"}]
    assert extra[LEGACY_ATTACHMENTS_KEY] == extra[VALID_ATTACHMENTS_KEY]
    assert valid_attachments(extra) == frozenset({Attachment("c1", "eth0")})
    assert valid_attachments({LEGACY_ATTACHMENTS_KEY: []}) == frozenset()
    assert valid_attachments({}) is None
    with pytest.raises(ConfigError):
        valid_attachments({VALID_ATTACHMENTS_KEY: [{"ifname": "eth0"}]})


# --- plugin skeleton ------------------------------------------------------------------

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}


def _echo_handler(request: PluginRequest) -> Result:
    return Result(request.cni_version, ips=(IPConfig("10.1.0.2/24"),))


def _crash(request: PluginRequest) -> Result:
    raise RuntimeError("kaboom")


def test_dispatch_version_answers_in_the_requested_version() -> None:
    code, out = dispatch({}, "VERSION", {}, b'{"cniVersion": "0.4.0"}', "/proc/self/ns/net")
    assert code == 0
    assert json.loads(out) == {"cniVersion": "0.4.0", "supportedVersions": list(SUPPORTED_VERSIONS)}


def test_dispatch_add_renders_in_config_version() -> None:
    stdin = json.dumps({"cniVersion": "0.3.1", "name": "n", "type": "t"}).encode()
    code, out = dispatch({Command.ADD: _echo_handler}, "ADD", ENV, stdin, 3)
    assert code == 0
    assert json.loads(out)["ips"][0] == {"version": "4", "address": "10.1.0.2/24"}


@pytest.mark.parametrize(
    ("command", "env", "stdin", "code"),
    [
        ("ADD", ENV, b'{"cniVersion": "9.0.0", "name": "n"}', ErrorCode.INCOMPATIBLE_VERSION),
        ("ADD", ENV, b"not json", ErrorCode.DECODE_FAILURE),
        ("ADD", {"CNI_COMMAND": "ADD"}, b'{"cniVersion": "1.0.0"}', ErrorCode.INVALID_ENVIRONMENT),
        ("JUMP", ENV, b'{"cniVersion": "1.0.0"}', ErrorCode.INVALID_ENVIRONMENT),
        (
            "DEL",
            {**ENV, "CNI_COMMAND": "DEL"},
            b'{"cniVersion": "1.0.0"}',
            ErrorCode.INVALID_ENVIRONMENT,
        ),
    ],
)
def test_dispatch_errors(command: str, env: dict[str, str], stdin: bytes, code: int) -> None:
    rc, out = dispatch({Command.ADD: _echo_handler}, command, env, stdin, 3)
    assert rc == 1
    error = json.loads(out)
    assert error["code"] == code
    assert error["cniVersion"]


def test_dispatch_turns_crashes_into_code_999() -> None:
    stdin = b'{"cniVersion": "1.0.0", "name": "n"}'
    rc, out = dispatch({Command.ADD: _crash}, "ADD", ENV, stdin, 3)
    assert rc == 1
    assert json.loads(out) == {
        "cniVersion": "1.0.0",
        "code": 999,
        "msg": "RuntimeError: kaboom",
    }
