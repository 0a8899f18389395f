"""The import direction of DESIGN.md: api is a leaf, the pure core does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "kubewire"

# package -> kubewire packages it may import
ALLOWED = {
    "api": set(),
    "controllers": {"api"},
    "store": set(),
    "proxy": {"kernel"},
    "dns": set(),
    "dnsserver": {"dns"},  # only proxy.sync does I/O (nft and conntrack in a node netns)
    "policy": {"api"},  # pure: compiler, oracle, fake; the lab's agent will apply it
    "gotrace": set(),  # pure, sans-I/O Go execution trace reader
    "bgp": set(),  # pure sans-I/O speaker core; drivers with sockets live elsewhere
    "bgpd": {"bgp"},  # asyncio driver (sockets, timers) around the bgp core
    "bgpnet": {"api", "bgp", "bgpd"},  # pure BGP plans; of bgpd only bgpd.config (checked below)
    "gosched": {"gotrace"},  # pure scheduler model replaying traces
    "golatency": {"gotrace", "gosched"},  # pure wait attribution, summary, HTML timeline
    "gotelemetry": set(),  # schedtrace parsers and the advisor are pure; probe.py reads /proc
}
# Narrower than a whole package: module prefix -> the only modules of it a package may import.
ONLY_MODULES = {"bgpnet": {"kubewire.bgpd": ("kubewire.bgpd.config",)}}
IO_MODULES = {"subprocess", "socket", "pyroute2", "ctypes", "asyncio.subprocess"}
PURE = {"api", "controllers", "dns", "policy", "bgp", "gotrace", "bgpnet", "gosched",
        "golatency", "gotelemetry"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_packages_import_only_downwards() -> None:
    problems = []
    for pkg, allowed in ALLOWED.items():
        for f in sorted((SRC / pkg).rglob("*.py")):
            for mod in _imports(f):
                parts = mod.split(".")
                if parts[0] == "kubewire" and len(parts) > 1:
                    target = parts[1]
                    if target != pkg and target not in allowed:
                        problems.append(f"{f.relative_to(SRC)} imports {mod}")
                for prefix, only in ONLY_MODULES.get(pkg, {}).items():
                    if (mod == prefix or mod.startswith(prefix + ".")) and mod not in only:
                        problems.append(f"{f.relative_to(SRC)} imports {mod}")
                if pkg in PURE and parts[0] in {m.split(".")[0] for m in IO_MODULES}:
                    problems.append(f"{f.relative_to(SRC)} (pure) imports {mod}")
    assert not problems, "\n".join(problems)
