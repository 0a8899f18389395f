"""Corefile: the subset of CoreDNS's Caddyfile syntax that kubewire's DNS plugins use.

Two stages, both pure. ``parse_blocks`` turns text into server blocks of raw directives
(name, arguments, nested block, position). ``parse_corefile`` then checks every directive
against its plugin's grammar and returns typed, frozen configs. Every error is a
``CorefileError`` whose text starts ``Corefile:LINE:COL:`` so an editor can jump to it.
Reading files named in the Corefile (resolv.conf, hosts) is left to the server: this module
never touches the file system.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubewire.dns.errors import DnsError


class CorefileError(DnsError, ValueError):
    """A Corefile that cannot be served; ``line``/``col`` are 1-based (0: no position)."""

    def __init__(self, message: str, line: int = 0, col: int = 0,
                 filename: str = "Corefile") -> None:
        self.message, self.line, self.col, self.filename = message, line, col, filename
        super().__init__(f"{filename}:{line}:{col}: {message}")


# -- stage 1: tokens and blocks ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    line: int
    col: int
    quoted: bool = False

    @property
    def brace(self) -> str | None:
        return self.text if not self.quoted and self.text in ("{", "}") else None


@dataclass(frozen=True, slots=True)
class Directive:
    """One line of a block: ``name args... [{ nested directives }]``."""

    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...]
    line: int
    col: int
    arg_pos: tuple[tuple[int, int], ...] = field(default=(), repr=False, compare=False)

    def pos(self, i: int) -> tuple[int, int]:
        """Line and column of argument ``i`` (the directive's own when out of range)."""
        return self.arg_pos[i] if 0 <= i < len(self.arg_pos) else (self.line, self.col)


@dataclass(frozen=True, slots=True)
class ServerKey:
    """``[dns://]zone[:port]``; ``zone`` is absolute and lowercase ("." or "cluster.local.")."""

    zone: str
    port: int
    line: int = field(default=0, compare=False)
    col: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"{self.zone}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerBlock:
    keys: tuple[ServerKey, ...]
    directives: tuple[Directive, ...]
    line: int
    col: int


_ENV_RE = re.compile(r"\{\$([A-Za-z_][A-Za-z0-9_]*)\}|\{%([A-Za-z_][A-Za-z0-9_]*)%\}")


def tokenize(text: str, env: Mapping[str, str] | None = None,
             filename: str = "Corefile") -> list[Token]:
    """Words, quoted strings and braces with positions; ``#`` starts a comment."""
    env = os.environ if env is None else env
    out: list[Token] = []
    i, n, line, col = 0, len(text), 1, 1
    while i < n:
        c = text[i]
        if c == "\n":
            i, line, col = i + 1, line + 1, 1
            continue
        if c in " \t\r,":  # Caddy separates server keys with commas as well as spaces
            i, col = i + 1, col + 1
            continue
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        start_line, start_col = line, col
        if c == '"':
            buf = []
            i, col = i + 1, col + 1
            while True:
                if i >= n:
                    raise CorefileError("unterminated quoted string", start_line, start_col,
                                        filename)
                c = text[i]
                if c == "\\" and i + 1 < n and text[i + 1] in '"\\':
                    buf.append(text[i + 1])
                    i, col = i + 2, col + 2
                    continue
                if c == '"':
                    i, col = i + 1, col + 1
                    break
                if c == "\n":
                    line, col = line + 1, 0
                buf.append(c)
                i, col = i + 1, col + 1
            out.append(Token(_env("".join(buf), env), start_line, start_col, quoted=True))
            continue
        j = i
        while j < n and text[j] not in " \t\r\n,#\"":
            j += 1
        word = text[i:j]
        col += j - i
        i = j
        word = _env(word, env)
        if word:  # a word that was only an unset {$VAR} is no word at all
            out.append(Token(word, start_line, start_col))
    return out


def _env(word: str, env: Mapping[str, str]) -> str:
    if "{" not in word:
        return word
    return _ENV_RE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), word)


def parse_blocks(text: str, filename: str = "Corefile",
                 env: Mapping[str, str] | None = None) -> tuple[ServerBlock, ...]:
    """Server blocks of raw directives; only syntax is checked here."""
    return _BlockParser(tokenize(text, env, filename), filename).parse()


class _BlockParser:
    def __init__(self, toks: list[Token], filename: str) -> None:
        self.toks, self.i, self.filename = toks, 0, filename

    def err(self, msg: str, tok: Token | tuple[int, int]) -> CorefileError:
        line, col = (tok.line, tok.col) if isinstance(tok, Token) else tok
        return CorefileError(msg, line, col, self.filename)

    def parse(self) -> tuple[ServerBlock, ...]:
        toks = self.toks
        blocks: list[ServerBlock] = []
        seen: dict[tuple[str, int], ServerKey] = {}
        while self.i < len(toks):
            first = toks[self.i]
            if first.brace:
                raise self.err(f'expected server keys such as ".:53", found "{first.text}"',
                               first)
            keys: list[Token] = []
            while (self.i < len(toks) and toks[self.i].line == first.line
                   and not toks[self.i].brace):
                keys.append(toks[self.i])
                self.i += 1
            parsed = tuple(_server_key(k, self.filename) for k in keys)
            for key in parsed:
                if (key.zone, key.port) in seen:
                    prev = seen[(key.zone, key.port)]
                    raise self.err(f'duplicate server key "{key}" (first at line {prev.line})',
                                   (key.line, key.col))
                seen[(key.zone, key.port)] = key
            if self.i < len(toks) and toks[self.i].text == "{" and not toks[self.i].quoted:
                if toks[self.i].line != first.line:
                    raise self.err("put the { on the same line as the server keys",
                                   toks[self.i])
                self.i += 1
                directives = self.directives(toks[self.i - 1])
            elif not blocks:  # Caddy: a lone server block may omit its braces
                directives = self.directives(None)
                if self.i < len(toks):
                    raise self.err("a Corefile with several server blocks needs { } "
                                   "around each", toks[self.i])
            else:
                raise self.err("expected { after the server keys", keys[-1])
            blocks.append(ServerBlock(parsed, directives, first.line, first.col))
        if not blocks:
            raise CorefileError("no server blocks: start with a key such as .:53 { ... }",
                                1, 1, self.filename)
        return tuple(blocks)

    def directives(self, opened: Token | None) -> tuple[Directive, ...]:
        toks = self.toks
        out: list[Directive] = []
        while self.i < len(toks):
            tok = toks[self.i]
            if tok.brace == "}":
                if opened is None:
                    raise self.err('unexpected "}"', tok)
                self.i += 1
                return tuple(out)
            if tok.brace == "{":
                raise self.err('unexpected "{": a block must follow a directive on its line', tok)
            self.i += 1
            args: list[Token] = []
            last = tok
            while (self.i < len(toks) and toks[self.i].line == last.line
                   and not toks[self.i].brace):
                last = toks[self.i]
                args.append(last)
                self.i += 1
            nested: tuple[Directive, ...] = ()
            if (self.i < len(toks) and toks[self.i].brace == "{"
                    and toks[self.i].line == last.line):
                self.i += 1
                nested = self.directives(toks[self.i - 1])
            out.append(Directive(tok.text, tuple(a.text for a in args), nested, tok.line,
                                 tok.col, tuple((a.line, a.col) for a in args)))
        if opened is not None:
            raise self.err('unclosed "{" (no matching "}")', opened)
        return tuple(out)


_LABEL_RE = re.compile(r"[a-z0-9_*]([-a-z0-9_]{0,61}[a-z0-9_])?")


def _server_key(tok: Token, filename: str) -> ServerKey:
    text = tok.text

    def bad(msg: str) -> CorefileError:
        return CorefileError(msg, tok.line, tok.col, filename)

    if "://" in text:
        scheme, text = text.split("://", 1)
        if scheme.lower() != "dns":
            raise bad(f'unsupported scheme "{scheme}://" in server key "{tok.text}"; '
                      "kubewire serves plain DNS (dns://)")
    zone, port_text = (text.rsplit(":", 1) if ":" in text else (text, "53"))
    if not port_text.isdigit() or int(port_text) > 65535:
        raise bad(f'bad port "{port_text}" in server key "{tok.text}"; expected 0-65535')
    return ServerKey(_zone(zone, bad, f'server key "{tok.text}"'), int(port_text),
                     tok.line, tok.col)


def _zone(text: str, bad: Callable[[str], CorefileError], what: str) -> str:
    name = text.strip().lower().rstrip(".")
    if not name:
        return "."
    if "/" in name:
        raise bad(f"{what}: reverse zones as CIDR are not supported; write in-addr.arpa "
                  "names instead")
    if len(name) > 253 or not all(_LABEL_RE.fullmatch(lbl) for lbl in name.split(".")):
        raise bad(f'{what}: "{text}" is not a domain name')
    return name + "."


def in_zone(name: str, zone: str) -> bool:
    """``name`` (absolute, lowercase) is ``zone`` or below it."""
    return zone == "." or name == zone or name.endswith("." + zone)


# -- stage 2: typed plugin configs ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostPort:
    """A listen address; ``host`` "" means the server's default listen host."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    zones: tuple[str, ...]
    domain: str  # the cluster domain, no trailing dot: the zone that is not under .arpa
    pods: str = "disabled"  # "insecure" answers a-b-c-d.<ns>.pod names; CoreDNS's default
    fallthrough: tuple[str, ...] | None = None  # None: never; (): every zone
    ttl: int = 5


@dataclass(frozen=True, slots=True)
class ForwardTarget:
    host: str = ""  # an IP address, or "" when ``path`` names a resolv.conf file
    port: int = 53
    path: str = ""
    line: int = field(default=0, compare=False)
    col: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    zone: str
    to: tuple[ForwardTarget, ...]
    except_zones: tuple[str, ...] = ()
    policy: str = "random"
    max_fails: int = 2
    expire: float = 10.0
    max_concurrent: int = 0  # 0: no limit
    health_check: float = 0.5
    force_tcp: bool = False
    prefer_udp: bool = False
    timeout: float = 5.0  # kubewire extension; CoreDNS's fixed overall deadline is 5 s


@dataclass(frozen=True, slots=True)
class CacheConfig:
    zones: tuple[str, ...] = (".",)
    success_capacity: int = 9984
    success_ttl: int = 3600
    success_minttl: int = 5
    denial_capacity: int = 9984
    denial_ttl: int = 1800
    denial_minttl: int = 5


@dataclass(frozen=True, slots=True)
class HostsConfig:
    path: str = "/etc/hosts"
    zones: tuple[str, ...] = (".",)
    entries: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (address, names) from the block
    ttl: int = 3600
    no_reverse: bool = False
    reload: float = 5.0  # 0: never re-read the file
    fallthrough: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class RewriteRule:
    kind: str  # exact | prefix | suffix | substring | regex
    match: str
    replacement: str
    stop: bool = True
    line: int = field(default=0, compare=False)
    col: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class RewriteConfig:
    rules: tuple[RewriteRule, ...]


@dataclass(frozen=True, slots=True)
class HealthConfig:
    address: HostPort = HostPort("", 8080)
    lameduck: float = 0.0


@dataclass(frozen=True, slots=True)
class ReadyConfig:
    address: HostPort = HostPort("", 8181)


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    address: HostPort = HostPort("localhost", 9153)


@dataclass(frozen=True, slots=True)
class ReloadConfig:
    interval: float = 30.0
    jitter: float = 15.0


@dataclass(frozen=True, slots=True)
class LogConfig:
    zones: tuple[str, ...] = (".",)
    classes: frozenset[str] = frozenset({"all"})


@dataclass(frozen=True, slots=True)
class ErrorsConfig:
    pass


@dataclass(frozen=True, slots=True)
class LoopConfig:
    pass


@dataclass(frozen=True, slots=True)
class LoadbalanceConfig:
    policy: str = "round_robin"


PluginConfig = (KubernetesConfig | ForwardConfig | CacheConfig | HostsConfig | RewriteConfig
                | HealthConfig | ReadyConfig | PrometheusConfig | ReloadConfig | LogConfig
                | ErrorsConfig | LoopConfig | LoadbalanceConfig)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One server block, validated; ``plugins`` is in Corefile order (the chain reorders)."""

    keys: tuple[ServerKey, ...]
    plugins: tuple[tuple[str, PluginConfig], ...]
    line: int = field(default=0, compare=False)

    def get(self, name: str) -> Any:
        for n, cfg in self.plugins:
            if n == name:
                return cfg
        return None

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k.zone for k in self.keys))


@dataclass(frozen=True, slots=True)
class Corefile:
    servers: tuple[ServerConfig, ...]
    filename: str = field(default="Corefile", compare=False)


class _Args:
    """Cursor over a directive's arguments that turns every mistake into a positioned error."""

    def __init__(self, d: Directive, filename: str, plugin: str | None = None) -> None:
        self.d, self.filename, self.i = d, filename, 0
        self.plugin = plugin or d.name

    def err(self, msg: str, i: int | None = None) -> CorefileError:
        line, col = self.d.pos(self.i if i is None else i)
        return CorefileError(f"{self.plugin}: {msg}", line, col, self.filename)

    def more(self) -> bool:
        return self.i < len(self.d.args)

    def take(self, what: str) -> str:
        if not self.more():
            raise self.err(f"missing {what}", len(self.d.args) - 1 if self.d.args else -1)
        self.i += 1
        return self.d.args[self.i - 1]

    def rest(self) -> list[str]:
        out = list(self.d.args[self.i:])
        self.i = len(self.d.args)
        return out

    def done(self) -> None:
        if self.more():
            raise self.err(f'unexpected argument "{self.d.args[self.i]}"')

    def integer(self, what: str, lo: int, hi: int) -> int:
        text = self.take(what)
        if not re.fullmatch(r"\d+", text) or not lo <= int(text) <= hi:
            raise self.err(f'{what} must be an integer {lo}-{hi}, not "{text}"', self.i - 1)
        return int(text)

    def duration(self, what: str, lo: float = 0.0) -> float:
        text = self.take(what)
        value = parse_duration(text)
        if value is None or value < lo:
            floor = f" of at least {lo:g}s" if lo else ""
            raise self.err(f'{what} must be a duration{floor} such as 5s or 500ms, not "{text}"',
                           self.i - 1)
        return value

    def at(self, i: int) -> Callable[[str], CorefileError]:
        """An error factory positioned at argument ``i``."""
        def err(msg: str) -> CorefileError:
            return self.err(msg, i)
        return err

    def zones(self, texts: list[str], start: int) -> tuple[str, ...]:
        return tuple(_zone(t, self.at(start + j), "zone") for j, t in enumerate(texts))

    def no_block(self) -> None:
        if self.d.block:
            b = self.d.block[0]
            raise CorefileError(f"{self.plugin}: takes no block", b.line, b.col, self.filename)


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float | None:
    """Seconds in a Go duration ("5s", "1m30s", "250ms"), or None."""
    if text == "0":
        return 0.0  # Go accepts a bare zero, and CoreDNS configs use it ("reload 0")
    if not text or _DURATION_RE.sub("", text):
        return None
    return sum(float(v) * _UNITS[u] for v, u in _DURATION_RE.findall(text))


def _host_port(a: _Args, default: HostPort, what: str = "address") -> HostPort:
    if not a.more():
        return default
    text = a.take(what)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise a.err(f'{what} must be [HOST]:PORT such as :8080, not "{text}"', a.i - 1)
    host = host.strip("[]")
    if host and host != "localhost" and _ip(host) is None:
        raise a.err(f'{what}: "{host}" is not an IP address (or localhost)', a.i - 1)
    return HostPort(host, int(port))


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _fallthrough(a: _Args, start: int) -> tuple[str, ...]:
    return a.zones(a.rest(), start)


def _subs(d: Directive, filename: str) -> Iterator[_Args]:
    for sub in d.block:
        yield _Args(sub, filename, f"{d.name} {sub.name}")


def _kubernetes(d: Directive, zones: tuple[str, ...], filename: str) -> KubernetesConfig:
    a = _Args(d, filename)
    own = a.zones(a.rest(), 0) or zones
    cluster = [z for z in own if not z.endswith("arpa.") and z != "."]
    if len(cluster) != 1:
        raise a.err("name exactly one cluster domain (such as cluster.local) besides reverse "
                    f"zones; got {', '.join(cluster) or 'none'}", 0)
    pods, fall, ttl = "disabled", None, 5
    for s in _subs(d, filename):
        name = s.d.name
        if name == "pods":
            pods = s.take("mode (disabled or insecure)")
            if pods not in ("disabled", "insecure"):
                raise s.err(f'"{pods}" is not supported; use insecure or disabled '
                            "(kubewire does not track pod IPs for verified)", 0)
        elif name == "fallthrough":
            fall = _fallthrough(s, 0)
        elif name == "ttl":
            ttl = s.integer("TTL", 0, 3600)
        elif name in ("endpoint", "kubeconfig"):
            # Objects reach kubewire through set_cluster, not a client: accepted and unused.
            s.rest()
        else:
            raise s.err("unknown property; expected pods, fallthrough, ttl, endpoint or "
                        "kubeconfig", -1)
        s.done()
        s.no_block()
    a.done()
    return KubernetesConfig(own, cluster[0].rstrip("."), pods, fall, ttl)


_POLICIES = ("random", "round_robin", "sequential")


def _forward(d: Directive, zones: tuple[str, ...], filename: str) -> ForwardConfig:
    a = _Args(d, filename)
    zone = a.zones([a.take("FROM zone")], 0)[0]
    to = []
    while a.more():
        i = a.i
        text = a.take("upstream")
        to.append(_target(text, a.at(i), *d.pos(i)))
    if not to:
        raise a.err("missing upstream (an address such as 10.0.0.10:53 or a resolv.conf path)",
                    0)
    if len(to) > 15:
        raise a.err("at most 15 upstreams", 15)
    kw: dict[str, Any] = {}
    for s in _subs(d, filename):
        name = s.d.name
        if name == "except":
            kw["except_zones"] = s.zones(s.rest(), 0)
        elif name == "policy":
            policy = s.take("policy")
            if policy not in _POLICIES:
                raise s.err(f'"{policy}" is not one of {", ".join(_POLICIES)}', 0)
            kw["policy"] = policy
        elif name == "max_fails":
            kw["max_fails"] = s.integer("max_fails", 0, 1000)
        elif name == "expire":
            kw["expire"] = s.duration("expire")
        elif name == "max_concurrent":
            kw["max_concurrent"] = s.integer("max_concurrent", 1, 1_000_000)
        elif name == "health_check":
            kw["health_check"] = s.duration("health_check", 0.01)
            s.rest()  # no_rec, domain NAME: accepted; kubewire checks passively
        elif name == "timeout":
            kw["timeout"] = s.duration("timeout", 0.01)
        elif name in ("force_tcp", "prefer_udp"):
            kw[name] = True
        else:
            raise s.err("unknown property; expected except, policy, max_fails, expire, "
                        "max_concurrent, health_check, force_tcp, prefer_udp or timeout", -1)
        s.done()
        s.no_block()
    return ForwardConfig(zone, tuple(to), **kw)


def _target(text: str, err: Callable[[str], CorefileError], line: int,
            col: int) -> ForwardTarget:
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if scheme != "dns":
            raise err(f'"{scheme}://" upstreams are not supported; use dns:// or a bare address')
        text = rest
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.lstrip(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, "53"
    ip = _ip(host)
    if ip is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise err(f'bad port "{port}" in upstream "{text}"')
        return ForwardTarget(ip, int(port), "", line, col)
    if "/" in text:
        return ForwardTarget("", 53, text, line, col)
    raise err(f'"{text}" is neither an IP address nor a resolv.conf path')


def _cache(d: Directive, zones: tuple[str, ...], filename: str) -> CacheConfig:
    a = _Args(d, filename)
    kw: dict[str, Any] = {}
    if a.more() and a.d.args[0].isdigit():
        ttl = a.integer("TTL", 0, 2**31 - 1)
        kw["success_ttl"] = kw["denial_ttl"] = ttl
        # CoreDNS: a max TTL below the default minimum lowers the minimum with it.
        kw["success_minttl"] = kw["denial_minttl"] = min(5, ttl)
    rest = a.rest()
    if rest:
        kw["zones"] = a.zones(rest, len(d.args) - len(rest))
    for s in _subs(d, filename):
        kind = s.d.name
        if kind not in ("success", "denial"):
            raise s.err("unknown property; expected success or denial "
                        "(kubewire does not implement prefetch or serve_stale)", -1)
        kw[f"{kind}_capacity"] = s.integer("capacity", 1, 10_000_000)
        if s.more():
            kw[f"{kind}_ttl"] = s.integer("TTL", 0, 2**31 - 1)
        if s.more():
            kw[f"{kind}_minttl"] = s.integer("MINTTL", 0, 2**31 - 1)
        s.done()
        s.no_block()
    return CacheConfig(**kw)


def _hosts(d: Directive, zones: tuple[str, ...], filename: str) -> HostsConfig:
    a = _Args(d, filename)
    kw: dict[str, Any] = {}
    if a.more():
        kw["path"] = a.take("file")
    rest = a.rest()
    if rest:
        kw["zones"] = a.zones(rest, 1)
    entries = []
    for s in _subs(d, filename):
        name = s.d.name
        if name == "ttl":
            kw["ttl"] = s.integer("TTL", 0, 2**31 - 1)
        elif name == "no_reverse":
            kw["no_reverse"] = True
        elif name == "reload":
            kw["reload"] = s.duration("reload")
        elif name == "fallthrough":
            kw["fallthrough"] = _fallthrough(s, 0)
        elif _ip(name) is not None:
            names = s.rest()
            if not names:
                raise CorefileError(f"hosts: address {name} needs at least one name",
                                    s.d.line, s.d.col, filename)
            entries.append((_ip(name) or name, tuple(
                _zone(n, s.at(j), "name") for j, n in enumerate(names))))
        else:
            raise s.err("unknown property; expected an address line, ttl, no_reverse, "
                        "reload or fallthrough", -1)
        s.done()
        s.no_block()
    return HostsConfig(entries=tuple(entries), **kw)


_REWRITE_KINDS = ("exact", "prefix", "suffix", "substring", "regex")


def _rewrite(d: Directive, zones: tuple[str, ...], filename: str) -> RewriteConfig:
    a = _Args(d, filename)
    stop = True
    if a.more() and a.d.args[0] in ("stop", "continue"):
        stop = a.take("flow") == "stop"
    field_ = a.take("field (name)")
    if field_ != "name":
        raise a.err(f'only "rewrite name" is supported, not "{field_}"', a.i - 1)
    kind = "exact"
    left = [x for x in a.d.args[a.i:] if x != "answer"]
    if a.more() and len(a.d.args) - a.i >= 3 and a.d.args[a.i + 2] != "answer":
        kind = a.take("match type")
        if kind not in _REWRITE_KINDS:
            raise a.err(f'match type "{kind}" is not one of {", ".join(_REWRITE_KINDS)}',
                        a.i - 1)
    del left
    line, col = d.pos(a.i)
    match = a.take("FROM name")
    repl = a.take("TO name")
    if kind == "regex":
        try:
            re.compile(match)
        except re.error as exc:
            raise a.err(f"bad regular expression: {exc}", a.i - 2) from None
    else:
        match, repl = match.lower(), repl.lower()
    if a.more() and a.d.args[a.i] == "answer":
        # "answer auto" / "answer name A B": kubewire always maps the answer's names back.
        a.rest()
    a.done()
    a.no_block()
    return RewriteConfig((RewriteRule(kind, match, repl, stop, line, col),))


def _addr_only(default: HostPort, what: str) -> Callable[[Directive, tuple[str, ...], str],
                                                           Any]:
    def parse(d: Directive, zones: tuple[str, ...], filename: str) -> Any:
        a = _Args(d, filename)
        addr = _host_port(a, default)
        a.done()
        lameduck = 0.0
        for s in _subs(d, filename):
            if what != "health" or s.d.name != "lameduck":
                raise s.err("unknown property" + ("; expected lameduck" if what == "health"
                                                  else ""), -1)
            lameduck = s.duration("lameduck")
            s.done()
            s.no_block()
        if what == "health":
            return HealthConfig(addr, lameduck)
        if not d.block:
            return ReadyConfig(addr) if what == "ready" else PrometheusConfig(addr)
        raise AssertionError("unreachable")
    return parse


def _reload(d: Directive, zones: tuple[str, ...], filename: str) -> ReloadConfig:
    a = _Args(d, filename)
    interval = a.duration("interval", 2.0) if a.more() else 30.0
    jitter = a.duration("jitter", 1.0) if a.more() else min(15.0, interval / 2)
    if jitter > interval / 2:
        raise a.err("jitter must be at most half the interval", 1)
    a.done()
    a.no_block()
    return ReloadConfig(interval, jitter)


def _log(d: Directive, zones: tuple[str, ...], filename: str) -> LogConfig:
    a = _Args(d, filename)
    args = a.rest()
    # A format ("{common}", "{combined}" or a template) may follow the zones: kubewire always
    # writes the common format, so it is accepted and not used.
    fmt = next((i for i, t in enumerate(args) if t.startswith("{")), len(args))
    own = a.zones(args[:fmt], 0)
    classes: set[str] = set()
    for s in _subs(d, filename):
        if s.d.name != "class":
            raise s.err("unknown property; expected class", -1)
        for c in s.rest():
            if c not in ("all", "success", "denial", "error"):
                raise s.err(f'class "{c}" is not one of all, success, denial, error', 0)
            classes.add(c)
        s.no_block()
    return LogConfig(own or (".",), frozenset(classes or {"all"}))


def _bare(cfg: Callable[[], PluginConfig]) -> Callable[[Directive, tuple[str, ...], str], Any]:
    def parse(d: Directive, zones: tuple[str, ...], filename: str) -> Any:
        a = _Args(d, filename)
        a.done()
        a.no_block()
        return cfg()
    return parse


def _loadbalance(d: Directive, zones: tuple[str, ...], filename: str) -> LoadbalanceConfig:
    a = _Args(d, filename)
    if a.more():
        policy = a.take("policy")
        if policy != "round_robin":
            raise a.err(f'policy "{policy}" is not supported; use round_robin', 0)
    a.done()
    a.no_block()
    return LoadbalanceConfig()


# Plugin name -> parser (data, not registration side effects). The execution order is not
# here: kubewire.dnsserver holds it, as CoreDNS's plugin.cfg does.
PARSERS: Mapping[str, Callable[[Directive, tuple[str, ...], str], Any]] = {
    "errors": _bare(ErrorsConfig),
    "log": _log,
    "health": _addr_only(HealthConfig().address, "health"),
    "ready": _addr_only(ReadyConfig().address, "ready"),
    "prometheus": _addr_only(PrometheusConfig().address, "prometheus"),
    "reload": _reload,
    "loop": _bare(LoopConfig),
    "rewrite": _rewrite,
    "loadbalance": _loadbalance,
    "cache": _cache,
    "hosts": _hosts,
    "kubernetes": _kubernetes,
    "forward": _forward,
}
REPEATABLE = frozenset({"rewrite"})


def parse_corefile(text: str, filename: str = "Corefile",
                   env: Mapping[str, str] | None = None) -> Corefile:
    """Parse and validate ``text``; raises ``CorefileError`` naming line and column."""
    servers = []
    for block in parse_blocks(text, filename, env):
        zones = tuple(dict.fromkeys(k.zone for k in block.keys))
        plugins: list[tuple[str, PluginConfig]] = []
        first: dict[str, Directive] = {}
        for d in block.directives:
            parser = PARSERS.get(d.name)
            if parser is None:
                near = [p for p in PARSERS if _close(p, d.name)]
                hint = f'; did you mean "{near[0]}"?' if near else ""
                raise CorefileError(f'unknown plugin "{d.name}"{hint}', d.line, d.col, filename)
            if d.name in first and d.name not in REPEATABLE:
                raise CorefileError(f'plugin "{d.name}" given twice in this server block '
                                    f"(first at line {first[d.name].line})", d.line, d.col,
                                    filename)
            first.setdefault(d.name, d)
            cfg = parser(d, zones, filename)
            if isinstance(cfg, RewriteConfig) and d.name in dict(plugins):
                i = [n for n, _ in plugins].index(d.name)
                prev = plugins[i][1]
                assert isinstance(prev, RewriteConfig)
                plugins[i] = (d.name, RewriteConfig(prev.rules + cfg.rules))
                continue
            plugins.append((d.name, cfg))
        servers.append(ServerConfig(block.keys, tuple(plugins), block.line))
    return Corefile(tuple(servers), filename)


def _close(a: str, b: str) -> bool:
    """Edit distance at most 1 (a typo), for the "did you mean" hint."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def default_corefile(domain: str = "cluster.local", *, upstream: str = "/etc/resolv.conf",
                     port: int = 53, reload: str = "") -> str:
    """The Corefile kubeadm installs for CoreDNS, for ``domain``; ``reload`` gives the
    reload plugin an interval (kubeadm leaves CoreDNS's 30 s default)."""
    return f""".:{port} {{
    errors
    health {{
       lameduck 5s
    }}
    ready
    kubernetes {domain} in-addr.arpa ip6.arpa {{
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus :9153
    forward . {upstream} {{
       max_concurrent 1000
    }}
    cache 30
    loop
    reload{" " + reload if reload else ""}
    loadbalance
}}
"""


DEFAULT_COREFILE = default_corefile()

__all__ = [
    "DEFAULT_COREFILE",
    "PARSERS",
    "CacheConfig",
    "Corefile",
    "CorefileError",
    "Directive",
    "ErrorsConfig",
    "ForwardConfig",
    "ForwardTarget",
    "HealthConfig",
    "HostPort",
    "HostsConfig",
    "KubernetesConfig",
    "LoadbalanceConfig",
    "LogConfig",
    "LoopConfig",
    "PluginConfig",
    "PrometheusConfig",
    "ReadyConfig",
    "ReloadConfig",
    "RewriteConfig",
    "RewriteRule",
    "ServerBlock",
    "ServerConfig",
    "ServerKey",
    "default_corefile",
    "in_zone",
    "parse_blocks",
    "parse_corefile",
    "parse_duration",
]
