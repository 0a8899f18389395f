"""Corefile parser: the kubeadm default, every form the plugins take, every error with line:col."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubewire.dns.corefile import (
    DEFAULT_COREFILE,
    PARSERS,
    CacheConfig,
    CorefileError,
    ForwardConfig,
    ForwardTarget,
    HealthConfig,
    HostPort,
    HostsConfig,
    KubernetesConfig,
    LogConfig,
    PrometheusConfig,
    ReadyConfig,
    ReloadConfig,
    RewriteRule,
    ServerKey,
    default_corefile,
    parse_blocks,
    parse_corefile,
    parse_duration,
)
from kubewire.dnsserver.chain import PLUGIN_ORDER


def test_default_corefile_parses_to_typed_configs() -> None:
    cfg = parse_corefile(DEFAULT_COREFILE)
    (server,) = cfg.servers
    assert server.keys == (ServerKey(".", 53),)
    assert [n for n, _ in server.plugins] == [
        "errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop",
        "reload", "loadbalance"]
    assert server.get("health") == HealthConfig(HostPort("", 8080), 5.0)
    assert server.get("ready") == ReadyConfig(HostPort("", 8181))
    assert server.get("kubernetes") == KubernetesConfig(
        ("cluster.local.", "in-addr.arpa.", "ip6.arpa."), "cluster.local", "insecure",
        ("in-addr.arpa.", "ip6.arpa."), 30)
    assert server.get("prometheus") == PrometheusConfig(HostPort("", 9153))
    assert server.get("forward") == ForwardConfig(
        ".", (ForwardTarget(path="/etc/resolv.conf"),), max_concurrent=1000)
    assert server.get("cache") == CacheConfig(success_ttl=30, denial_ttl=30)
    assert server.get("reload") == ReloadConfig(30.0, 15.0)


def test_default_corefile_takes_the_domain() -> None:
    text = default_corefile("k8s.example", upstream="127.0.0.1:5353", port=1053)
    (server,) = parse_corefile(text).servers
    assert server.keys == (ServerKey(".", 1053),)
    assert server.get("kubernetes").domain == "k8s.example"
    assert server.get("forward").to == (ForwardTarget("127.0.0.1", 5353),)


def test_every_parsed_plugin_has_a_place_in_the_order() -> None:
    assert set(PARSERS) == set(PLUGIN_ORDER)
    assert len(PLUGIN_ORDER) == len(set(PLUGIN_ORDER))
    # CoreDNS's plugin.cfg relative order for the plugins we share.
    pos = {n: i for i, n in enumerate(PLUGIN_ORDER)}
    assert pos["cache"] < pos["rewrite"] < pos["hosts"] < pos["kubernetes"] < pos["forward"]
    assert pos["prometheus"] < pos["errors"] < pos["log"] < pos["cache"]


@pytest.mark.parametrize(("text", "keys"), [
    (".:53 {\n}", [(".", 53)]),
    (". {\n}", [(".", 53)]),
    ("dns://.:5353 {\n}", [(".", 5353)]),
    ("Cluster.Local.:53 example.org {\n}", [("cluster.local.", 53), ("example.org.", 53)]),
    ("a.local:53, b.local:53 {\n}", [("a.local.", 53), ("b.local.", 53)]),
    (":1053 {\n}", [(".", 1053)]),
    (".:0 {\n}\ncluster.local:0 {\n}", [(".", 0), ("cluster.local.", 0)]),
])
def test_server_keys(text: str, keys: list[tuple[str, int]]) -> None:
    got = [(k.zone, k.port) for s in parse_corefile(text).servers for k in s.keys]
    assert got == keys


def test_blocks_comments_quotes_env_and_nesting() -> None:
    text = """# a comment line
.:53 {   # trailing comment
    log "example.org"   # quoted argument
    forward . {$UPSTREAM} {
        policy sequential
        max_fails 3
        expire 1m30s
        timeout 250ms
        except internal.example
    }
    cache 30 example.org { success 100 60 2 }
    hosts /tmp/hosts example.org {
        10.0.0.1 a.example.org A2.example.org
        ttl 60
        no_reverse
        fallthrough
    }
    rewrite name suffix .corp. .svc.cluster.local.
    rewrite continue name regex (.*)\\.x {1}.y answer auto
    reload 10s 2s
}
"""
    (server,) = parse_corefile(text, env={"UPSTREAM": "10.0.0.53:5353"}).servers
    assert server.get("log") == LogConfig(("example.org.",))
    fwd = server.get("forward")
    assert fwd.to == (ForwardTarget("10.0.0.53", 5353),)
    assert (fwd.policy, fwd.max_fails, fwd.expire, fwd.timeout) == ("sequential", 3, 90.0, 0.25)
    assert fwd.except_zones == ("internal.example.",)
    assert server.get("cache") == CacheConfig(("example.org.",), 100, 60, 2, 9984, 30, 5)
    assert server.get("hosts") == HostsConfig(
        "/tmp/hosts", ("example.org.",),
        (("10.0.0.1", ("a.example.org.", "a2.example.org.")),), 60, True, 5.0, ())
    rules = server.get("rewrite").rules
    assert rules == (RewriteRule("suffix", ".corp.", ".svc.cluster.local."),
                     RewriteRule("regex", r"(.*)\.x", "{1}.y", stop=False))
    assert server.get("reload") == ReloadConfig(10.0, 2.0)


def test_raw_blocks_keep_positions() -> None:
    (block,) = parse_blocks(".:53 {\n  cache 30 {\n    success 10\n  }\n}")
    (cache,) = block.directives
    assert (cache.name, cache.args, cache.line, cache.col) == ("cache", ("30",), 2, 3)
    assert cache.block[0].name == "success" and cache.block[0].pos(0) == (3, 13)


def test_a_lone_block_may_omit_braces() -> None:
    (server,) = parse_corefile(".:5300\nerrors\nlog\n").servers
    assert [n for n, _ in server.plugins] == ["errors", "log"]


def test_missing_env_is_empty_and_durations() -> None:
    with pytest.raises(CorefileError, match="missing upstream"):
        parse_corefile(".:53 {\n  forward . {$NOPE_NOT_SET}\n}", env={})
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("250ms") == 0.25
    assert parse_duration("5") is None and parse_duration("") is None
    assert parse_duration("0") == 0.0
    (server,) = parse_corefile('.:53 {\n  log . "{common}"\n}').servers
    assert server.get("log") == LogConfig((".",))


ERRORS = {
    "unknown": (".:53 {\n  errors\n  forwardd . 1.1.1.1\n}",
                3, 3, 'unknown plugin "forwardd"; did you mean "forward"?'),
    "dupkey": (".:53 {\n}\n\ncluster.local:53 .:53 {\n}", 4, 18, 'duplicate server key ".:53"'),
    "dupkey_default_port": (". {\n}\n.:53 {\n}", 3, 1, 'duplicate server key ".:53"'),
    "bad_port": (".:99999 {\n}", 1, 1, 'bad port "99999"'),
    "scheme": ("tls://.:853 {\n}", 1, 1, 'unsupported scheme "tls://"'),
    "unclosed": (".:53 {\n  cache 30 {\n    success 10\n}", 1, 6, 'unclosed "{"'),
    "unexpected_close": (".:53 {\n}\n}", 3, 1, 'expected server keys such as ".:53"'),
    "brace_next_line": (".:53\n{\n}", 2, 1, "put the { on the same line"),
    "dup_plugin": (".:53 {\n  cache\n  cache 30\n}", 3, 3, 'plugin "cache" given twice'),
    "cache_bad": (".:53 {\n  cache 30 {\n    success x\n  }\n}", 3, 13,
                  "capacity must be an integer"),
    "cache_prop": (".:53 {\n  cache 30 {\n    prefetch 10\n  }\n}", 3, 5, "unknown property"),
    "fwd_missing": (".:53 {\n  forward .\n}", 2, 11, "missing upstream"),
    "fwd_bad": (".:53 {\n  forward . not-an-ip\n}", 2, 13, "neither an IP address"),
    "fwd_tls": (".:53 {\n  forward . tls://1.1.1.1\n}", 2, 13, '"tls://" upstreams'),
    "fwd_policy": (".:53 {\n  forward . 1.1.1.1 {\n    policy fastest\n  }\n}", 3, 12,
                   '"fastest" is not one of random, round_robin, sequential'),
    "fwd_maxc": (".:53 {\n  forward . 1.1.1.1 {\n    max_concurrent 0\n  }\n}", 3, 20,
                 "max_concurrent must be an integer"),
    "k8s_two": (".:53 {\n  kubernetes a.local b.local\n}", 2, 14, "exactly one cluster domain"),
    "k8s_pods": (".:53 {\n  kubernetes cluster.local {\n    pods verified\n  }\n}", 3, 10,
                 '"verified" is not supported'),
    "k8s_ttl": (".:53 {\n  kubernetes cluster.local {\n    ttl 99999\n  }\n}", 3, 9,
                "TTL must be an integer 0-3600"),
    "k8s_prop": (".:53 {\n  kubernetes cluster.local {\n    upstream\n  }\n}", 3, 5,
                 "unknown property"),
    "reload_min": (".:53 {\n  reload 1s\n}", 2, 10, "at least 2s"),
    "reload_jitter": (".:53 {\n  reload 10s 6s\n}", 2, 14, "at most half the interval"),
    "health_addr": (".:53 {\n  health 8080\n}", 2, 10, "[HOST]:PORT"),
    "health_prop": (".:53 {\n  health {\n    lameduk 5s\n  }\n}", 3, 5, "expected lameduck"),
    "errors_arg": (".:53 {\n  errors stdout\n}", 2, 10, 'unexpected argument "stdout"'),
    "rewrite_type": (".:53 {\n  rewrite type A AAAA\n}", 2, 11, 'only "rewrite name"'),
    "rewrite_kind": (".:53 {\n  rewrite name glob a b\n}", 2, 16, 'match type "glob"'),
    "rewrite_regex": (".:53 {\n  rewrite name regex (a b\n}", 2, 22, "bad regular expression"),
    "hosts_noname": (".:53 {\n  hosts {\n    1.2.3.4\n  }\n}", 3, 5, "needs at least one name"),
    "hosts_prop": (".:53 {\n  hosts {\n    bogus\n  }\n}", 3, 5, "unknown property"),
    "quote": ('.:53 {\n  log "abc\n}', 2, 7, "unterminated quoted string"),
    "empty": ("# nothing\n", 1, 1, "no server blocks"),
    "zone_bad": ("exa$mple.com {\n}", 1, 1, "is not a domain name"),
    "log_class": (".:53 {\n  log {\n    class bogus\n  }\n}", 3, 11, 'class "bogus"'),
    "loadbalance_policy": (".:53 {\n  loadbalance weighted\n}", 2, 15, "use round_robin"),
    "stray_open": (".:53 {\n  {\n}", 2, 3, 'unexpected "{"'),
    "cidr": ("10.0.0.0/8 {\n}", 1, 1, "CIDR are not supported"),
    "ready_block": (".:53 {\n  ready {\n    x\n  }\n}", 3, 5, "unknown property"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_name_line_and_column(name: str) -> None:
    text, line, col, fragment = ERRORS[name]
    with pytest.raises(CorefileError) as info:
        parse_corefile(text)
    err = info.value
    assert (err.line, err.col) == (line, col), str(err)
    assert fragment in err.message
    assert str(err).startswith(f"Corefile:{line}:{col}: ")


def test_error_names_the_file() -> None:
    with pytest.raises(CorefileError, match=r"^/etc/coredns/Corefile:1:1: "):
        parse_corefile("key:x {\n}", filename="/etc/coredns/Corefile")


_WORDS = [".:53", "{", "}", "\n", " ", "cache", "30", "forward", ".", "1.2.3.4", "/etc/r",
          "kubernetes", "cluster.local", "pods", "insecure", "ttl", "health", ":8080",
          "lameduck", "5s", "rewrite", "name", "regex", "(", "hosts", "fallthrough", "reload",
          "2s", '"', "#", "{$X}", "success", "policy", "log", "class", "ready", "dns://",
          "prometheus", "x:y", "\u00e9", ",", "max_concurrent", "-1", "errors"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=40) | st.text(max_size=80))
def test_any_text_parses_or_raises_corefile_error(parts: list[str] | str) -> None:
    text = parts if isinstance(parts, str) else " ".join(parts)
    try:
        parse_corefile(text, env={"X": "1.2.3.4"})
    except CorefileError as err:
        assert err.line >= 1 and err.col >= 0 and str(err).startswith("Corefile:")
