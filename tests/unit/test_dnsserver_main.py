"""``python -m kubewire.dnsserver`` as a process, asked by real dig; the objects loader."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubewire.dnsserver.__main__ import build_parser, load_objects, serve
from kubewire.dnsserver.app import DnsApp
from kubewire.dnsserver.errors import ObjectsError

from .test_dns_answer import PODS, SERVICES, SLICES
from .test_dnsserver_helpers import answers, ask

S = "default.svc.cluster.local"
COREFILE = """.:0 {
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
    loop
    loadbalance
}
"""
needs_dig = pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")


def _docs() -> list[dict[str, object]]:
    return ([{"kind": "Service", **s} for s in SERVICES]
            + [{"kind": "EndpointSlice", **s} for s in SLICES]
            + [{"kind": "Pod", **p} for p in PODS]
            + [{"kind": "ConfigMap", "metadata": {"name": "ignored"}}])


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    core = tmp_path / "Corefile"
    core.write_text(COREFILE)
    objects = tmp_path / "objects.yaml"
    objects.write_text(yaml.safe_dump_all(_docs()))  # multi-document YAML
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubewire.dnsserver", "-conf", str(core), "--objects",
         str(objects), "--host", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(".:0 -> 127.0.0.1:"), first
        assert proc.stdout.readline().strip() == "kubewire-dns ready"
        yield proc, int(first.rsplit(":", 1)[1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def dig(port: int, *args: str) -> str:
    return subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
                          capture_output=True, text=True, timeout=20).stdout


@needs_dig
def test_process_answers_dig_and_exits_zero_on_sigterm(
        server: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = server
    assert dig(port, "+short", f"web.{S}").split() == ["10.96.0.10"]
    assert dig(port, "+short", "+tcp", f"_pg._tcp.db.{S}", "SRV").count(f".db.{S}.") == 2
    assert dig(port, "+short", "-x", "10.96.0.10").split() == [f"web.{S}."]
    nx = dig(port, f"nope.{S}")
    assert "status: NXDOMAIN" in nx and f"{S.split('.', 1)[1]}." in nx
    full = dig(port, f"web.{S}")
    assert re.search(r"\s30\s+IN\s+A\s+10\.96\.0\.10", full)  # the Corefile's ttl 30
    # Outside the cluster with no forward plugin: SERVFAIL, reported by errors on stderr.
    assert "status: SERVFAIL" in dig(port, "www.example.org")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0 and time.monotonic() - t0 < 5
    assert proc.stderr is not None
    assert "[ERROR] plugin/errors: 2 www.example.org. A" in proc.stderr.read()


def test_bad_corefile_exits_2_with_position(tmp_path: Path) -> None:
    core = tmp_path / "Corefile"
    core.write_text(".:0 {\n    kubernetes cluster.local\n    cache 30 {\n        prefetch 1\n"
                    "    }\n}\n")
    out = subprocess.run([sys.executable, "-m", "kubewire.dnsserver", "--corefile", str(core)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "Corefile:4:9: cache prefetch: unknown property" in out.stderr


def test_flags() -> None:
    args = build_parser().parse_args(["-conf", "/x/Corefile", "--objects", "o.json",
                                      "--host", "127.0.0.1"])
    assert (args.conf, args.objects, args.host) == ("/x/Corefile", "o.json", "127.0.0.1")
    assert build_parser().parse_args(["--corefile", "C"]).conf == "C"
    assert build_parser().parse_args([]).conf == "Corefile"


def test_load_objects_forms(tmp_path: Path) -> None:
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"kind": "List", "items": _docs()}))
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(_docs()))
    nested = tmp_path / "nested.yaml"
    nested.write_text(yaml.safe_dump_all([{"kind": "ServiceList", "items": _docs()[:2]},
                                          None, _docs()[2:]]))
    for path in (listing, plain, nested):
        got = load_objects(str(path))
        assert [len(got[k]) for k in ("Service", "EndpointSlice", "Pod")] == [
            len(SERVICES), len(SLICES), len(PODS)], path
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- strings\n")
    with pytest.raises(ObjectsError, match="expected Kubernetes objects"):
        load_objects(str(bad))
    with pytest.raises(ObjectsError, match="not JSON or YAML"):
        (tmp_path / "x.json").write_text("{nope")
        load_objects(str(tmp_path / "x.json"))


class _LiveSource:
    """What a live source (an API watch) does: feed objects, reload, and end with an error."""

    def __init__(self) -> None:
        self.answers: list[list[str]] = []

    async def run(self, app: DnsApp) -> None:
        app.set_cluster(SERVICES, SLICES, PODS)
        await asyncio.wait_for(app.wait_ready(), 5)
        self.answers.append(answers(await ask(app.port, f"web.{S}")))
        await app.reload(COREFILE.replace("ttl 30", "ttl 9"))
        r = await ask(app.port, f"web.{S}")
        self.answers.append([str(r.answer[0].ttl)])
        raise RuntimeError("watch lost")


def test_serve_runs_a_live_source_and_stops_on_its_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    app = DnsApp(COREFILE, host="127.0.0.1")
    source = _LiveSource()
    with pytest.raises(RuntimeError, match="watch lost"):
        asyncio.run(serve(app, source))
    assert source.answers == [["10.96.0.10"], ["9"]]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(".:0 -> 127.0.0.1:") and "kubewire-dns ready" in out
    assert app.ports == {}  # stopped: nothing listens any more
