"""``python -m kubewire.dnsserver -conf Corefile [--objects FILE] [--host H]``.

Runs until SIGTERM or SIGINT and exits 0. Objects reach the server through a *source*: an
object with ``async def run(app)`` that calls ``app.set_cluster`` (and may call
``app.reload``) for as long as it likes. ``--objects`` is the static one; a live source
(an API watch) plugs into ``make_source`` and ``serve`` without changing them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from kubewire.dns.corefile import CorefileError
from kubewire.dns.errors import DnsInputError
from kubewire.dnsserver.app import DnsApp, cluster_objects
from kubewire.dnsserver.errors import DnsServerError, ObjectsError
from kubewire.dnsserver.watch import LabWatch

KINDS = ("Service", "EndpointSlice", "Pod")


class Source(Protocol):
    async def run(self, app: DnsApp) -> None: ...


def load_objects(path: str) -> dict[str, list[dict[str, Any]]]:
    """Services, EndpointSlices and Pods from a JSON or YAML file (a List, a list, or docs)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ObjectsError(f"{path}: {exc.strerror}") from None
    try:
        docs: list[Any] = ([json.loads(text)] if path.endswith(".json")
                           else list(yaml.safe_load_all(text)))
    except (ValueError, yaml.YAMLError) as exc:
        raise ObjectsError(f"{path}: not JSON or YAML ({exc})") from None
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    stack = list(reversed(docs))
    while stack:
        doc = stack.pop()
        if doc is None:
            continue
        if isinstance(doc, list):
            stack.extend(reversed(doc))
        elif isinstance(doc, dict) and isinstance(doc.get("items"), list):
            stack.extend(reversed(doc["items"]))  # kind: List, or a ServiceList and such
        elif isinstance(doc, dict) and doc.get("kind") in out:
            out[doc["kind"]].append(doc)
        elif not isinstance(doc, dict):
            raise ObjectsError(f"{path}: expected Kubernetes objects, found {doc!r:.60}")
    return out


class StaticObjects:
    """Feeds the objects of one file once. The file is checked here, then read again by
    the child process that builds the zone, so this process never holds the parsed JSON
    (a 10k-Service cluster's objects are several times the size of its zone)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            Path(path).stat()
        except OSError as exc:
            raise ObjectsError(f"{path}: {exc.strerror}") from None

    async def run(self, app: DnsApp) -> None:
        def produce() -> Any:
            o = load_objects(self.path)
            return cluster_objects(o["Service"], o["EndpointSlice"], o["Pod"])

        await app.update_cluster_from(produce)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kubewire.dnsserver",
                                 description="kubewire's CoreDNS-compatible cluster DNS server")
    ap.add_argument("-conf", "--corefile", dest="conf", default="Corefile",
                    help="Corefile to load (default: ./Corefile, as CoreDNS)")
    ap.add_argument("--objects", help="JSON/YAML file of Services, EndpointSlices and Pods")
    ap.add_argument("--watch", metavar="SOCKET",
                    help="list and watch Services, EndpointSlices and Namespaces through "
                         "a kubewire lab daemon's socket (how lab DNS pods run)")
    ap.add_argument("--host", default="0.0.0.0",
                    help="address every server block listens on (default 0.0.0.0)")
    return ap


def make_source(args: argparse.Namespace) -> Source | None:
    """The object source the flags ask for (a live source adds its branch here)."""
    if args.objects:
        return StaticObjects(args.objects)
    if args.watch:
        return LabWatch(args.watch)
    return None


async def serve(app: DnsApp, source: Source | None = None) -> None:
    """Start ``app``, run ``source`` beside it, stop cleanly on SIGTERM/SIGINT.

    Prints one ``KEY -> HOST:PORT`` line per server key once listening, then
    ``kubewire-dns ready`` once every kubernetes plugin has a zone (a harness can wait for it).
    A source that raises stops the server with its error; one that returns is simply done.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    for key, port in app.ports.items():
        print(f"{key} -> {app.host}:{port}", flush=True)

    async def announce() -> None:
        await app.wait_ready()
        print("kubewire-dns ready", flush=True)

    tasks = {asyncio.ensure_future(announce())}
    waiter = asyncio.ensure_future(stop.wait())
    feeder = asyncio.ensure_future(source.run(app)) if source is not None else None
    try:
        watched = {waiter} | ({feeder} if feeder is not None else set())
        while True:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                break
            if feeder is not None and feeder in done:
                watched.discard(feeder)
                feeder.result()  # re-raises the source's error
    finally:
        for task in (*tasks, waiter, *([feeder] if feeder is not None else [])):
            task.cancel()
        await asyncio.gather(*tasks, waiter, *([feeder] if feeder is not None else []),
                             return_exceptions=True)
        await app.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Query log lines should reach a pipe (a pod's log) as they happen, not in 8 KB chunks.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        text = Path(args.conf).read_text()
        app = DnsApp(text, path=args.conf, host=args.host)
        source = make_source(args)
        asyncio.run(serve(app, source))
    except (CorefileError, DnsInputError, DnsServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
