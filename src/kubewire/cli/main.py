"""The `kubewire` command: kubectl-like verbs over a lab.

Exit codes: 0 ok, 1 a check failed, 2 bad input (nothing was created or changed).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from kubewire.api.errors import ApiError
from kubewire.api.kinds import KINDS, resolve_resource_type
from kubewire.api.selectors import SelectorError, parse_selector_string
from kubewire.cli import printers
from kubewire.cli.bgpcmd import bgp
from kubewire.cli.client import DaemonClient, DaemonUnavailable
from kubewire.cli.failure import BAD_INPUT, Failure
from kubewire.cli.gocmd import go
from kubewire.cli.manifests import LoadedInput, load_input
from kubewire.cli.progress import Progress
from kubewire.lab import names
from kubewire.lab.state import LabDirs, list_labs
from kubewire.workload import runner


def fail(message: str) -> NoReturn:
    raise Failure(message)


def need_root(verb: str) -> None:
    if os.geteuid() != 0:
        fail(f"kubewire {verb} needs root: it creates and enters network namespaces. "
             "Run it with sudo.")


def pick_lab(explicit: str | None) -> str:
    if explicit:
        return explicit
    labs = list_labs()
    if len(labs) == 1:
        return labs[0]
    if not labs:
        fail("no lab is running; start one with `kubewire up -f FILE`")
    fail(f"several labs are running ({', '.join(labs)}); choose one with --lab NAME")


def daemon(ctx: click.Context) -> DaemonClient:
    return DaemonClient(pick_lab(ctx.obj.get("lab")))


def call(client: DaemonClient, payload: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    try:
        reply = client.request(payload, timeout=timeout)
    except DaemonUnavailable as exc:
        fail(str(exc))
    if not reply.get("ok"):
        fail(reply.get("error", "the lab daemon refused the request"))
    return reply


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--lab", envvar="KUBEWIRE_LAB", help="Which lab (default: the only one running).")
@click.pass_context
def cli(ctx: click.Context, lab: str | None) -> None:
    """Kubernetes networking, real, on one Linux machine."""
    ctx.ensure_object(dict)
    ctx.obj["lab"] = lab


# -- up / down / status ----------------------------------------------------------
@cli.command()
@click.option("-f", "--filename", "files", multiple=True, required=True,
              help="Manifest file, directory, or - for stdin.")
@click.option("--name", help="Lab name (overrides the Cluster object's metadata.name).")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for pods.")
@click.pass_context
def up(ctx: click.Context, files: Sequence[str], name: str | None, timeout: float) -> None:
    """Build a lab from manifests and wait until its pods are ready."""
    loaded = load_or_fail(files)
    cluster_obj = loaded.cluster_object(name or ctx.obj.get("lab"))
    lab = cluster_obj["metadata"]["name"]
    if problems := loaded.pod_range_problems(cluster_obj):
        fail("not enough pod addresses:\n  " + "\n  ".join(problems))
    need_root("up")
    if lab in list_labs() or any(True for _ in _lab_namespaces(lab)):
        fail(f"lab {lab!r} already exists; remove it with `kubewire down {lab}` first")
    dirs = LabDirs.of(lab)
    dirs.make()
    dirs.write_spec({"cluster": cluster_obj})
    started = time.monotonic()
    with Progress(f"lab {lab}") as progress:
        progress.update("starting the lab daemon")
        log = open(dirs.daemon_log, "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubewire.lab.daemon", "--lab", lab],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        client = DaemonClient(lab)
        _wait_for_daemon(client, proc, dirs)
        progress.update("applying manifests")
        try:
            call(client, {"op": "apply", "objects": loaded.objects})
        except Failure:
            # The daemon refused the input (e.g. a namespace that does not exist):
            # `up` must leave nothing behind.
            from kubewire.lab.cleanup import cleanup_lab

            cleanup_lab(lab)
            raise
        summary = _wait_ready(client, progress, timeout)
    for w in [*loaded.warnings, *summary.get("warnings", [])]:
        click.echo(f"warning: {w}", err=True)
    elapsed = time.monotonic() - started
    click.echo(f"lab {lab}: {summary['nodes']} nodes, {summary['ready']}/{summary['pods']} pods "
               f"ready in {elapsed:.1f}s (backend {summary['backend']}, cni {summary['cni']})")
    _report_unready(summary)


def _lab_namespaces(lab: str) -> list[str]:
    from kubewire.kernel.netns import list_netns

    return list_netns(names.lab_prefix(lab))


def _wait_for_daemon(client: DaemonClient, proc: subprocess.Popen[bytes], dirs: LabDirs) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = dirs.daemon_log.read_text(errors="replace").splitlines()[-15:]
            from kubewire.lab.cleanup import cleanup_lab

            cleanup_lab(client.lab)
            fail("the lab daemon exited during start-up:\n  " + "\n  ".join(tail))
        try:
            client.request({"op": "ping"}, timeout=5)
            return
        except DaemonUnavailable:
            time.sleep(0.01)
    fail(f"the lab daemon did not answer within 30 s; see {dirs.daemon_log}")


def _wait_ready(client: DaemonClient, progress: Progress, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        reply = call(client, {"op": "wait", "timeout": min(0.5, max(left, 0))})
        progress.update(f"{reply['ready']}/{reply['pods']} pods ready on {reply['nodes']} nodes",
                        reply["ready"], reply["pods"])
        if reply["done"] or left <= 0:
            return reply


def _report_unready(summary: dict[str, Any]) -> None:
    for pod, why in sorted(summary.get("unschedulable", {}).items()):
        click.echo(f"pod {pod} is unschedulable: {why}", err=True)
    for pod, why in sorted(summary.get("failed", {}).items()):
        click.echo(f"pod {pod} failed: {why}", err=True)
    if summary.get("unschedulable") or summary.get("failed") or not summary.get("done", True):
        sys.exit(1)


@cli.command()
@click.argument("lab", required=False)
@click.option("--all", "everything", is_flag=True, help="Remove every kubewire lab and trace.")
@click.pass_context
def down(ctx: click.Context, lab: str | None, everything: bool) -> None:
    """Remove a lab: processes, namespaces, links and state."""
    from kubewire.lab.cleanup import cleanup_all, cleanup_lab

    need_root("down")
    report = cleanup_all() if everything else cleanup_lab(lab or pick_lab(ctx.obj.get("lab")))
    click.echo(f"removed {report.namespaces} namespaces, {report.processes} processes, "
               f"{len(report.directories)} state directories")


@cli.command()
@click.option("-o", "--output", type=click.Choice(["json"]), default=None)
def status(output: str | None) -> None:
    """Show the labs on this machine."""
    rows = []
    for lab in list_labs():
        try:
            st = DaemonClient(lab).request({"op": "status"}, timeout=10)
            rows.append({"lab": lab, "running": True, **st})
        except (DaemonUnavailable, OSError):
            rows.append({"lab": lab, "running": False})
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no labs")
        return
    click.echo(printers.format_columns(
        ["LAB", "DAEMON", "NODES", "PODS", "READY", "BACKEND", "CNI"],
        [[r["lab"], "running" if r["running"] else "dead", str(r.get("nodes", "-")),
          str(r.get("pods", "-")), str(r.get("ready", "-")), r.get("backend", "-"),
          r.get("cni", "-")] for r in rows]))


# -- apply / delete / get ------------------------------------------------------------
def load_or_fail(files: Sequence[str]) -> LoadedInput:
    try:
        return load_input(files)
    except ApiError as exc:
        click.echo(str(exc), err=True)
        sys.exit(BAD_INPUT)


@cli.command()
@click.option("-f", "--filename", "files", multiple=True, required=True)
@click.pass_context
def apply(ctx: click.Context, files: Sequence[str]) -> None:
    """Create or update objects in a running lab."""
    loaded = load_or_fail(files)
    client = daemon(ctx)
    reply = call(client, {"op": "apply", "objects": loaded.all_objects()})
    for w in loaded.warnings_for_running_lab():
        click.echo(f"warning: {w}", err=True)
    for r in reply["results"]:
        click.echo(f"{r['object']} {r['action']}")


@cli.command()
@click.argument("args", nargs=-1)
@click.option("-f", "--filename", "files", multiple=True)
@click.option("-n", "--namespace", default=None)
@click.option("--ignore-not-found", is_flag=True)
@click.pass_context
def delete(ctx: click.Context, args: Sequence[str], files: Sequence[str], namespace: str | None,
           ignore_not_found: bool) -> None:
    """Delete objects by file (-f) or by TYPE NAME..."""
    keys: list[list[str]] = []
    if files:
        loaded = load_or_fail(files)
        for o in loaded.objects:
            keys.append([o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]])
    else:
        if len(args) < 2 and not (args and "/" in args[0]):
            fail("give -f FILE, TYPE NAME..., or TYPE/NAME")
        for kind, name in _type_names(args):
            keys.append([kind, _ns_for(kind, namespace), name])
    reply = call(daemon(ctx), {"op": "delete", "keys": keys, "ignore_missing": ignore_not_found})
    for r in reply["results"]:
        click.echo(f"{r['object']} deleted")


def _type_names(args: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    if "/" in args[0]:
        for a in args:
            t, _, n = a.partition("/")
            out.append((_kind(t), n))
    else:
        kind = _kind(args[0])
        out = [(kind, n) for n in args[1:]]
    return out


def _kind(type_name: str) -> str:
    try:
        return resolve_resource_type(type_name).kind
    except ApiError as exc:
        fail(str(exc))


def _namespaced(kind: str) -> bool:
    info = KINDS.get(kind)
    return bool(info and info.namespaced)


def _ns_for(kind: str, namespace: str | None) -> str:
    return (namespace or "default") if _namespaced(kind) else ""


@cli.command()
@click.argument("type_name", metavar="TYPE[,TYPE...]")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default=None)
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("-o", "--output", type=click.Choice(["wide", "json", "yaml", "name"]))
@click.option("-l", "--selector", default=None, help="Label selector, e.g. app=web,tier!=db")
@click.pass_context
def get(ctx: click.Context, type_name: str, name: str | None, namespace: str | None,
        all_namespaces: bool, output: str | None, selector: str | None) -> None:
    """List objects like kubectl get."""
    if "/" in type_name and name is None:
        type_name, _, name = type_name.partition("/")
    try:
        sel = parse_selector_string(selector) if selector else None
    except SelectorError as exc:
        fail(f"invalid selector {selector!r}: {exc}")
    kinds = [_kind(t) for t in type_name.split(",")]
    client = daemon(ctx)
    all_items: list[dict[str, Any]] = []
    chunks = []
    notes: list[str] = []
    pods_for_ctx: list[dict[str, Any]] | None = None
    for kind in kinds:
        ns = None if all_namespaces or not _namespaced(kind) else (namespace or "default")
        got = call(client, {"op": "get", "kind": kind, "namespace": ns, "name": name})
        items = got["items"]
        notes += [f"{svc}: {why}" for svc, whys in got.get("notes", {}).items() for why in whys
                  if kind == "EndpointSlice" and (not name or svc.endswith(f"/{name}"))]
        if sel is not None:
            items = [i for i in items if sel.matches(i["metadata"].get("labels", {}))]
        if name and not items:
            ns_txt = f' in namespace "{ns}"' if ns else ""
            fail(f'{kind.lower()}s "{name}" not found{ns_txt}')
        all_items += items
        if output in (None, "wide"):
            if kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet") and \
                    pods_for_ctx is None:
                pods_for_ctx = call(client, {"op": "get", "kind": "Pod"})["items"]
            if not items:
                where = "" if all_namespaces or not _namespaced(kind) else \
                    f" in {namespace or 'default'} namespace"
                chunks.append(f"No resources found{where}.")
                continue
            chunks.append(printers.table(kind, items, output == "wide",
                                         all_namespaces and _namespaced(kind),
                                         printers.Ctx(pods_for_ctx or [])))
    if output in ("json", "yaml"):
        doc = all_items[0] if name and len(all_items) == 1 and len(kinds) == 1 else \
            printers.as_list(all_items)
        click.echo(printers.dump(doc, output))
    elif output == "name":
        for i in all_items:
            click.echo(f"{i['kind'].lower()}/{i['metadata']['name']}")
    else:
        click.echo("\n\n".join(chunks))
        if notes:
            # Why endpoints are missing (kubectl has no column for it; events would say).
            click.echo("\nNotes:\n  " + "\n  ".join(notes))


# -- exec / logs -------------------------------------------------------------------
@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("target")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@click.option("-n", "--namespace", default="default")
@click.option("-c", "--container", default=None)
@click.option("-i", "--stdin", "interactive", is_flag=True, help="Accepted for kubectl habit.")
@click.option("-t", "--tty", is_flag=True, help="Accepted for kubectl habit.")
@click.pass_context
def exec(ctx: click.Context, target: str, command: Sequence[str], namespace: str,
         container: str | None, interactive: bool, tty: bool) -> None:
    """Run a command in a pod's namespaces (or node/NAME, host/external): exec POD -- CMD..."""
    need_root("exec")
    cmd = list(command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        fail("give a command after --, e.g. kubewire exec web-0 -- ip addr")
    client = daemon(ctx)
    kind, _, name = target.partition("/") if "/" in target else ("pod", "", target)
    if kind in ("node", "nodes", "no"):
        nodes = call(client, {"op": "get", "kind": "Node", "name": name})["items"]
        if not nodes:
            fail(f'nodes "{name}" not found')
        path = f"/run/netns/{names.node_netns(client.lab, name)}"
        os.execvp("nsenter", ["nsenter", f"--net={path}", "--", *cmd])
    if kind == "host":
        path = f"/run/netns/{names.host_netns(client.lab, name)}"
        if not Path(path).exists():
            fail(f'host "{name}" not found in lab {client.lab} (hosts: external)')
        os.execvp("nsenter", ["nsenter", f"--net={path}", "--", *cmd])
    pod = _resolve_pod(client, _kind(kind), name, namespace)
    pod_name = pod["metadata"]["name"]
    if container and container not in [c["name"] for c in pod["spec"]["containers"]]:
        fail(f"container {container} is not valid for pod {pod_name}")
    netns = f"/run/netns/{names.pod_netns(client.lab, namespace, pod_name)}"
    uts = names.pod_uts_file(client.lab, namespace, pod_name)
    if not Path(netns).exists():
        fail(f"pod {namespace}/{pod_name} has no sandbox yet (is it running?)")
    files = names.pod_files(client.lab, namespace, pod_name)
    argv = runner.pod_command(cmd, netns=netns, uts=uts, files=files)
    os.execvp(argv[0], argv)


def _serves_echo(container: dict[str, Any]) -> bool:
    """Whether the container's ports are the built-in echo server's (HTTP naming the pod)."""
    from kubewire.lab.clusterdns import is_coredns_image
    from kubewire.workload.containers import decide

    return decide(container) == "builtin" and not is_coredns_image(container.get("image"))


def _resolve_pod(client: DaemonClient, kind: str, name: str, namespace: str) -> dict[str, Any]:
    if kind == "Pod":
        pods = call(client, {"op": "get", "kind": "Pod", "namespace": namespace,
                             "name": name})["items"]
        if not pods:
            fail(f'pods "{name}" not found in namespace "{namespace}"')
        pod: dict[str, Any] = pods[0]
        return pod
    owners = call(client, {"op": "get", "kind": kind, "namespace": namespace,
                           "name": name})["items"]
    if not owners:
        fail(f'{kind.lower()}s "{name}" not found in namespace "{namespace}"')
    pods = call(client, {"op": "get", "kind": "Pod", "namespace": namespace})["items"]
    owned = printers.Ctx(pods).owned(owners[0])
    running = [p for p in owned if p.get("status", {}).get("podIP")]
    if not running:
        fail(f"{kind.lower()}/{name} has no running pods")
    return sorted(running, key=lambda p: p["metadata"]["name"])[0]


@cli.command()
@click.argument("pod")
@click.option("-n", "--namespace", default="default")
@click.option("-c", "--container", default=None)
@click.option("-f", "--follow", is_flag=True)
@click.option("--tail", default=-1, help="Lines to show from the end (-1: all).")
@click.pass_context
def logs(ctx: click.Context, pod: str, namespace: str, container: str | None, follow: bool,
         tail: int) -> None:
    """Print a container's output."""
    client = daemon(ctx)
    kind, _, name = pod.partition("/") if "/" in pod else ("pod", "", pod)
    obj = _resolve_pod(client, _kind(kind), name, namespace)
    containers = [c["name"] for c in obj["spec"]["containers"]]
    if container is None:
        container = containers[0]
        if len(containers) > 1:
            click.echo(f'Defaulted container "{container}" out of: {", ".join(containers)}',
                       err=True)
    elif container not in containers:
        fail(f"container {container} is not valid for pod {obj['metadata']['name']}; "
             f"choose one of: {', '.join(containers)}")
    path = names.container_log(client.lab, namespace, obj["metadata"]["name"], container)
    if not path.exists():
        fail(f"no log yet for container {container} of pod {obj['metadata']['name']}")
    lines = path.read_text(errors="replace").splitlines()
    if tail >= 0:
        lines = lines[-tail:] if tail else []
    for line in lines:
        click.echo(line)
    if follow:
        with path.open() as f:
            f.seek(0, 2)
            while True:
                line = f.readline()
                if line:
                    click.echo(line, nl=False)
                else:
                    time.sleep(0.2)


# -- check -----------------------------------------------------------------------
@cli.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--max-pairs", default=2500, show_default=True,
              help="Probe all pairs up to this many; above it, a sample covering every node pair.")
@click.option("--timeout", default=2.0, show_default=True, help="Seconds per connection.")
@click.option("--policy", is_flag=True,
              help="NetworkPolicy: the from -> to matrix, measured and as Kubernetes says.")
@click.option("-n", "--namespace", "namespaces", multiple=True,
              help="With --policy: pods of these namespaces (default: all but kube-system).")
@click.option("--port", "ports", multiple=True, type=click.IntRange(1, 65535),
              help="With --policy: destination port (repeatable; default 80).")
@click.option("--protocol", "protocols", multiple=True,
              type=click.Choice(["TCP", "UDP"], case_sensitive=False),
              help="With --policy: protocol (repeatable; default TCP).")
@click.pass_context
def check(ctx: click.Context, output: str, max_pairs: int, timeout: float, policy: bool,
          namespaces: Sequence[str], ports: Sequence[int], protocols: Sequence[str]) -> None:
    """Measure pod-to-pod TCP connectivity with real connections.

    With --policy: the NetworkPolicy reachability matrix (every pair, per protocol and
    port), measured next to what Kubernetes says; exit 1 where they differ."""
    from kubewire.check.matrix import Target, choose_pairs, run_matrix
    from kubewire.check.report import render_json, render_table

    need_root("check")
    client = daemon(ctx)
    if policy:
        _check_policy(client, output, timeout, namespaces, ports, protocols)
        return
    if namespaces or ports or protocols:
        fail("-n, --port and --protocol go with --policy")
    pods = call(client, {"op": "get", "kind": "Pod"})["items"]
    targets = []
    for p in pods:
        ip = p.get("status", {}).get("podIP")
        if not ip:
            continue
        ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
        tcp = [(port["containerPort"], _serves_echo(c)) for c in p["spec"]["containers"]
               for port in c.get("ports", []) if port.get("protocol", "TCP") == "TCP"]
        targets.append(Target(ns, name, p["spec"].get("nodeName", ""), ip,
                              Path(f"/run/netns/{names.pod_netns(client.lab, ns, name)}"),
                              tcp[0][0] if tcp else None, http=tcp[0][1] if tcp else False))
    if len(targets) < 2:
        fail("check needs at least two running pods")
    pairs, sampled = choose_pairs(targets, max_pairs)
    started = time.monotonic()
    with Progress("check", enabled=output == "table") as progress:
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            progress.update(f"{done[0]}/{len(pairs)} connections", done[0], len(pairs))

        results = asyncio.run(run_matrix(pairs, timeout=timeout, progress=tick))
    elapsed = time.monotonic() - started
    if output == "json":
        click.echo(render_json(results, targets, sampled, elapsed))
    else:
        click.echo(render_table(results, targets, sampled, elapsed))
    if not all(r.ok for r in results):
        sys.exit(1)


def _check_policy(client: DaemonClient, output: str, timeout: float, namespaces: Sequence[str],
                  ports: Sequence[int], protocols: Sequence[str]) -> None:
    """``check --policy``: exit 1 when a measured cell differs from the oracle's."""
    from rich.console import Console

    from kubewire.check.policy import check_lab, render, table_width, to_json

    def items(kind: str) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = call(client, {"op": "get", "kind": kind})["items"]
        return got

    pods, spaces, policies = items("Pod"), items("Namespace"), items("NetworkPolicy")
    known = {n["metadata"]["name"] for n in spaces}
    if unknown := sorted(set(namespaces) - known):
        fail(f"namespaces not found: {', '.join(unknown)}")
    checks = [(proto.upper(), port) for proto in protocols or ("TCP",) for port in ports or (80,)]
    with Progress("check --policy", enabled=output == "table") as progress:
        progress.update(f"measuring {len(checks)} matrices")
        results, warnings = check_lab(client.lab, pods, spaces, policies, checks,
                                      namespaces or None, timeout)
    if sum(len(r.order) for r in results) < 2 * len(results):
        fail("check --policy needs at least two running pods")
    if output == "json":
        click.echo(to_json(results, warnings))
    else:
        console = Console(highlight=False)
        if not console.is_terminal:  # a pipe or file: never squeeze the matrices
            console.width = max(console.width, *(2 * table_width(r) + 4 for r in results))
        for w in warnings:
            console.print(f"warning: policy left out: {w}", style="yellow")
        for r in results:
            console.print(render(r, console.width))
    if any(r.differences() for r in results):
        sys.exit(1)


cli.add_command(bgp)
cli.add_command(go)


def main() -> None:
    cli(obj={})


if __name__ == "__main__":
    main()
