"""`kubewire bgp peers|routes`: the lab's BGP speakers, as `birdc show protocols` and
`show route all` would show them, but in Kubernetes terms (which node, why this peer)."""

from __future__ import annotations

import json
from typing import Any

import click

from kubewire.cli import printers


@click.group(name="bgp")
def bgp() -> None:
    """BGP sessions and routes of the nodes' speakers (labs with network.backend: bgp)."""


def _ask(ctx: click.Context, payload: dict[str, Any]) -> dict[str, Any]:
    from kubewire.cli.main import call, daemon  # main imports this module

    reply = call(daemon(ctx), {"op": "bgp", **payload}, timeout=30)
    for node, problem in sorted(reply.get("problems", {}).items()):
        click.echo(f"warning: {node}: {problem}", err=True)
    return reply


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@bgp.command()
@click.option("--node", default=None, help="Only this node's speaker.")
@click.option("-o", "--output", type=click.Choice(["json"]), default=None)
@click.pass_context
def peers(ctx: click.Context, node: str | None, output: str | None) -> None:
    """Every BGP session: state, uptime, prefixes received/accepted/advertised, last error."""
    items = _ask(ctx, {"what": "peers", "node": node})["items"]
    if output == "json":
        click.echo(json.dumps({"items": items}, indent=2))
        return
    rows = [[p["node"], p["address"], str(p["asn"]), p["origin"] or "-", p["state"],
             _uptime(p["uptime"]), str(p["prefixes_received"]), str(p["prefixes_accepted"]),
             str(p["prefixes_advertised"]), p["last_error"] or ""] for p in items]
    click.echo(printers.format_columns(["NODE", "PEER", "AS", "VIA", "STATE", "UPTIME", "RECEIVED",
                               "ACCEPTED", "ADVERTISED", "LAST ERROR"], rows))


@bgp.command()
@click.argument("prefix", required=False)
@click.option("--node", default=None, help="Only this node's Loc-RIB.")
@click.option("-o", "--output", type=click.Choice(["json"]), default=None)
@click.pass_context
def routes(ctx: click.Context, prefix: str | None, node: str | None,
           output: str | None) -> None:
    """Every path per prefix: `*>` the best, `*=` an equal-cost (ECMP) path, `x` rejected
    on import; BY is the decision step that chose the best."""
    items = _ask(ctx, {"what": "routes", "node": node, "prefix": prefix})["items"]
    if output == "json":
        click.echo(json.dumps({"items": items}, indent=2))
        return
    rows = []
    for route in items:
        for i, path in enumerate(route["paths"]):
            mark = ("*>" if path["best"] else "*=" if path["multipath"]
                    else " x" if not path["accepted"] else " *")
            rows.append([route["node"] if i == 0 else "", route["prefix"] if i == 0 else "",
                         mark, path["next_hop"] or "-", path["as_path"] or "(local)",
                         path["source"], "" if path["local_pref"] is None else
                         str(path["local_pref"]), "" if path["med"] is None else
                         str(path["med"]), (route["reason"] or "-") if i == 0 else ""])
    click.echo(printers.format_columns(["NODE", "PREFIX", "", "NEXT HOP", "AS PATH", "FROM",
                               "LOCPREF", "MED", "BY"], rows))
