"""The lab's "outside world" resolver: Unbound serving a static fake internet.

Cluster DNS forwards names outside the cluster domain to an upstream resolver, as CoreDNS's
`forward . /etc/resolv.conf` does on a real node. In the lab that upstream runs on the
external host (`host/external`), and it must never reach a real address. So Unbound gets
`local-zone: "." static`: every name is answered from the records given here, anything else
is NXDOMAIN, and the iterator (the only part that sends queries) is never asked. As a second
guard `do-not-query-address` covers all of IPv4 and IPv6, so even a query the local zones do
not cover (another class than IN) ends in SERVFAIL instead of a packet; and the external
host's namespace has no route out of the lab in any case.

Unbound is a reference server we did not write: clients (dig, the cluster DNS's forwarder)
talk to it exactly as they would to a real recursive resolver.
"""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename

from kubewire.kernel.netns import entered
from kubewire.workload.runner import KillResult, ProcessRecord, kill_record, write_record

__all__ = [
    "DEFAULT_EXTERNAL_ADDRESS",
    "DEFAULT_RECORDS",
    "EXTERNAL_HOST_NAME",
    "TTL",
    "UnboundConfigError",
    "UnboundNotInstalledError",
    "UpstreamError",
    "UpstreamPortInUseError",
    "UpstreamStartError",
    "config_path",
    "default_records",
    "render_unbound_conf",
    "start_upstream",
    "stop_upstream",
]

DNS_PORT = 53
TTL = 300
EXTERNAL_HOST_NAME = "external.test"
#: The external host's address with the default underlay (its first host address).
DEFAULT_EXTERNAL_ADDRESS = IPv4Address("172.18.0.1")
CONF_NAME = "unbound.conf"
LOG_NAME = "unbound.log"
PIDFILE_NAME = "unbound.pid"  # Unbound's own (plain PID); ours is the JSON record
RECORD_NAME = "upstream-dns.json"
_POLL = 0.05

Record = tuple[str, str, str]


class UpstreamError(Exception):
    """The outside-world resolver could not be configured or started."""


class UnboundNotInstalledError(UpstreamError):
    """No unbound (or unbound-checkconf) executable."""


class UnboundConfigError(UpstreamError):
    """A record is malformed, or unbound-checkconf rejected the configuration."""


class UpstreamPortInUseError(UpstreamError):
    """Something in the namespace already listens on port 53 of the address."""


class UpstreamStartError(UpstreamError):
    """Unbound exited at start or did not answer before the deadline."""


def default_records(external: IPv4Address) -> tuple[Record, ...]:
    """A small fake outside world; the external host's own name follows its address.

    Everything else uses documentation ranges (TEST-NET-1, 2001:db8::/32) that are never
    routed anywhere, and the `.test` TLD reserved for testing (RFC 6761).
    """
    return (
        (EXTERNAL_HOST_NAME, "A", str(external)),
        (str(external), "PTR", EXTERNAL_HOST_NAME),
        ("www.example.test", "A", "192.0.2.10"),
        ("mail.example.test", "AAAA", "2001:db8::25"),
        ("example.test", "MX", "10 mail.example.test"),
        ("example.test", "TXT", '"kubewire outside world"'),
    )


DEFAULT_RECORDS = default_records(DEFAULT_EXTERNAL_ADDRESS)


def _local_data_lines(records: Sequence[Record]) -> list[str]:
    """`local-data` lines, each record checked and written canonically.

    Parsing every record with dnspython first means a typo fails here with the record named,
    and no text from a record can end the quoted string and inject configuration.
    """
    lines = []
    for owner, rtype, rdata in records:
        what = f"record ({owner!r}, {rtype!r}, {rdata!r})"
        try:
            rdtype = dns.rdatatype.from_text(rtype)
        except dns.exception.DNSException as exc:
            raise UnboundConfigError(f"{what}: unknown type {rtype!r}") from exc
        try:
            if rdtype == dns.rdatatype.PTR and _is_ip(owner):
                # What `local-data-ptr` would write, but with our TTL (it uses 3600).
                name = dns.reversename.from_address(owner)
            else:
                name = dns.name.from_text(owner)
        except dns.exception.DNSException as exc:
            raise UnboundConfigError(f"{what}: bad owner name: {exc}") from exc
        text = _parse_rdata(what, rdtype, rdata).to_text()
        line = f"{name.to_text()} {TTL} IN {dns.rdatatype.to_text(rdtype)} {text}"
        if "'" in line or "\n" in line:
            raise UnboundConfigError(f"{what}: single quotes and newlines cannot be written")
        # Single quotes keep the double quotes of TXT data intact.
        lines.append(f"local-data: '{line}'")
    return lines


def _parse_rdata(what: str, rdtype: dns.rdatatype.RdataType, text: str) -> dns.rdata.Rdata:
    try:
        return dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=dns.name.root,
                                    relativize=False)
    except (dns.exception.DNSException, ValueError) as exc:
        raise UnboundConfigError(f"{what}: bad data: {exc}") from exc


def _is_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def _interfaces(listen: IPv4Address) -> list[str]:
    return list(dict.fromkeys((str(listen), "127.0.0.1")))


def render_unbound_conf(
    listen: IPv4Address,
    records: Sequence[Record],
    state_dir: Path,
    allow: Sequence[IPv4Network] = (IPv4Network("127.0.0.0/8"),),
) -> str:
    """Unbound's configuration: listen on `listen` and 127.0.0.1 port 53 (UDP and TCP),
    answer only from `records`, accept queries only from `allow` (127.0.0.0/8 is always
    added: the readiness check and tools inside the namespace use it)."""
    networks = sorted(set(allow) | {IPv4Network("127.0.0.0/8")})
    state = state_dir.resolve()
    interfaces = _interfaces(listen)
    out = [
        "# Written by kubewire.lab.upstream: the lab's fake outside world. Do not edit;",
        "# it is rewritten each time the resolver starts.",
        "server:",
        *(f"    interface: {i}" for i in interfaces),
        f"    port: {DNS_PORT}",
        "    do-ip4: yes",
        "    do-ip6: no",
        "    do-udp: yes",
        "    do-tcp: yes",
        "    num-threads: 1",
        # Unbound's default SO_REUSEPORT would let a second server share port 53 silently
        # (and split the queries between them); without it, a clash fails at start.
        "    so-reuseport: no",
        "    do-daemonize: no",
        '    chroot: ""',
        # Stay root: the state directory is root's, and the namespace is the sandbox.
        '    username: ""',
        f'    directory: "{state}"',
        f'    pidfile: "{state / PIDFILE_NAME}"',
        f'    logfile: "{state / LOG_NAME}"',
        "    use-syslog: no",
        "    log-time-ascii: yes",
        "    verbosity: 1",
        "    log-queries: yes",
        # No validator and no trust anchor: nothing to fetch, nothing to prime.
        '    module-config: "iterator"',
        # Never send a query anywhere, even for what the static zones do not cover.
        "    do-not-query-address: 0.0.0.0/0",
        "    do-not-query-address: ::/0",
        "    do-not-query-localhost: yes",
        "    access-control: 0.0.0.0/0 refuse",
        "    access-control: ::/0 refuse",
        *(f"    access-control: {n} allow" for n in networks),
        # The whole name space is local: unlisted names are NXDOMAIN, not recursed.
        '    local-zone: "." static',
        *(f"    {line}" for line in _local_data_lines(records)),
        "",
        "remote-control:",
        "    control-enable: no",
        "",
    ]
    return "\n".join(out)


def config_path(state_dir: Path) -> Path:
    return state_dir / CONF_NAME


def _executable(name: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise UnboundNotInstalledError(
            f"{name} not found: run `make setup` or `apt-get install -y unbound`")
    return found


def _check_config(conf: Path) -> None:
    checkconf = _executable("unbound-checkconf")
    proc = subprocess.run([checkconf, str(conf)], capture_output=True, text=True,
                          timeout=30, check=False)
    if proc.returncode != 0:
        message = (proc.stderr + proc.stdout).strip()
        raise UnboundConfigError(f"unbound-checkconf rejected {conf}:\n{message}")


def _check_port_free(netns_path: Path, addresses: Sequence[str]) -> None:
    """Bind port 53 (UDP and TCP) once ourselves, so a clash is reported before start.

    Without this, another server already on the port could pass the readiness check in
    place of the Unbound that is about to fail.
    """
    with entered(netns_path):
        socks = [socket.socket(socket.AF_INET, kind)
                 for _ in addresses for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)]
    try:
        for i, sock in enumerate(socks):
            address = addresses[i // 2]
            try:
                sock.bind((address, DNS_PORT))
            except OSError as exc:
                proto = "UDP" if sock.type == socket.SOCK_DGRAM else "TCP"
                if exc.errno == errno.EADDRINUSE:
                    raise UpstreamPortInUseError(
                        f"{proto} port {DNS_PORT} on {address} is already in use in "
                        f"{netns_path}: stop the other DNS server there first") from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise UpstreamStartError(
                        f"{address} is not an address of {netns_path} (or its lo is "
                        "down): Unbound cannot listen there") from None
                raise UpstreamStartError(
                    f"cannot bind {proto} {address}:{DNS_PORT} in {netns_path}: "
                    f"{exc.strerror}") from None
    finally:
        for sock in socks:
            sock.close()


def _answers(netns_path: Path, listen: IPv4Address, timeout: float) -> bool:
    """One real query from inside the namespace; any response (even REFUSED) counts."""
    query = dns.message.make_query("localhost.", "A")
    with entered(netns_path):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)  # dnspython waits with select() and its own deadline
    with sock:
        try:
            dns.query.udp(query, str(listen), port=DNS_PORT, timeout=timeout, sock=sock)
        except (dns.exception.Timeout, OSError):
            return False
    return True


def _log_tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _failure(popen: subprocess.Popen[bytes], listen: IPv4Address, log: Path) -> UpstreamError:
    tail = _log_tail(log)
    if "Address already in use" in tail:
        return UpstreamPortInUseError(
            f"port {DNS_PORT} on {listen} (or 127.0.0.1) is already in use in the namespace: "
            f"stop the other DNS server there first\n{tail}")
    if "Cannot assign requested address" in tail:
        return UpstreamStartError(
            f"{listen} is not an address of the namespace (or its lo is down)\n{tail}")
    return UpstreamStartError(f"unbound exited with status {popen.returncode} at start; "
                              f"its log ({log}) ends:\n{tail}")


# Popen handles of the resolvers this process started, so that stop_upstream reaps them
# (a killed child we never wait for stays a zombie as long as this process lives).
_children: dict[int, subprocess.Popen[bytes]] = {}


def start_upstream(
    netns_path: Path,
    listen: IPv4Address,
    state_dir: Path,
    allow: Sequence[IPv4Network],
    records: Sequence[Record] | None = None,
    *,
    pid_file: Path | None = None,
    timeout: float = 5.0,
) -> ProcessRecord:
    """Start Unbound in the namespace at `netns_path`, return once it answers.

    `records` defaults to `default_records(listen)` (so external.test is the listening
    host). Writes `unbound.conf`, `unbound.log` and Unbound's own pidfile into `state_dir`,
    and the pid record to `pid_file` (default `state_dir/upstream-dns.json`; the lab passes
    its `pids/` directory so `kubewire down` finds it).
    """
    unbound = _executable("unbound")
    nsenter = shutil.which("nsenter")
    if nsenter is None:
        raise UpstreamError("nsenter not found: install util-linux")
    if not netns_path.exists():
        raise UpstreamStartError(f"no network namespace at {netns_path}")
    state_dir.mkdir(parents=True, exist_ok=True)
    conf = config_path(state_dir)
    conf.write_text(render_unbound_conf(
        listen, default_records(listen) if records is None else records, state_dir, allow))
    _check_config(conf)
    _check_port_free(netns_path, _interfaces(listen))

    log = state_dir / LOG_NAME
    argv = [nsenter, f"--net={netns_path}", "--", unbound, "-d", "-c", str(conf)]
    with open(log, "ab") as out:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 close_fds=True, cwd="/")
    # nsenter execs unbound in place: this PID is Unbound's.
    record_file = pid_file or state_dir / RECORD_NAME
    record = write_record(popen.pid, record_file, argv, log)
    _children[popen.pid] = popen
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            _children.pop(popen.pid, None)
            record_file.unlink(missing_ok=True)
            raise _failure(popen, listen, log)
        if _answers(netns_path, listen, timeout=0.2):
            return record
        if time.monotonic() >= deadline:
            stop_upstream(record)
            record_file.unlink(missing_ok=True)
            raise UpstreamStartError(
                f"unbound in {netns_path} did not answer on {listen}:{DNS_PORT} within "
                f"{timeout:.0f}s; its log ({log}) ends:\n{_log_tail(log)}")
        time.sleep(_POLL)


def stop_upstream(record: ProcessRecord, grace: float = 2.0) -> KillResult:
    """Stop the resolver by its pid record (never a PID whose start time differs)."""
    result = kill_record(record, grace)
    popen = _children.pop(record.pid, None)
    if popen is not None:
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:  # pragma: no cover - kill_record waited already
            _children[record.pid] = popen
    return result
