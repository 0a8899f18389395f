"""CLI behaviour that needs no root: bad input exits 2 and creates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kubewire.cli.main import cli

GOOD = """apiVersion: v1
kind: Pod
metadata: {name: a}
spec:
  containers: [{name: c, image: x}]
"""


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "state"
    monkeypatch.setenv("KUBEWIRE_STATE_DIR", str(root))
    return root


def run(args: list[str], stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, input=stdin, obj={})
    return result.exit_code, result.output


def test_up_without_root_says_so_and_creates_nothing(
        state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    code, out = run(["up", "-f", "-"], GOOD)
    assert code == 2
    assert "needs root" in out and "sudo" in out
    assert not state.exists()


@pytest.mark.parametrize(("manifest", "expected"), [
    ("kind: Pod\napiVersion: v1\nmetadata:\n  name: a\n  x: [\n", "<stdin>:"),
    ("apiVersion: v1\nkind: Gadget\nmetadata: {name: a}\n", 'unknown kind "Gadget"'),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec:\n  containers: []\n",
     "<stdin>:3: metadata.name"),
    (GOOD + "---\n" + GOOD, "pod/default/a is declared twice"),
    ("apiVersion: kubewire.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\nspec:\n"
     "  podCIDR: 10.96.0.0/16\n", "overlaps serviceCIDR"),
    ("apiVersion: kubewire.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\nspec:\n"
     "  podCIDR: 10.244.0.1/16\n", "spec.podCIDR"),
])
def test_bad_input_exits_2_before_anything_is_created(
        state: Path, monkeypatch: pytest.MonkeyPatch, manifest: str, expected: str) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    code, out = run(["up", "-f", "-"], manifest)
    assert code == 2, out
    assert expected in out
    assert not state.exists()


def test_pod_ranges_too_small_for_the_workloads_exit_2(
        state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    manifest = ("apiVersion: kubewire.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\n"
                "spec:\n  nodes: 2\n  nodeCIDRMaskSize: 29\n---\n"
                "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n"
                "  replicas: 12\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n"
                "  template:\n    metadata: {labels: {app: db}}\n"
                "    spec: {containers: [{name: c, image: x}]}\n")
    code, out = run(["up", "-f", "-"], manifest)
    assert code == 2
    assert "statefulset/db in namespace default: 2 pod(s) would get no IP address" in out
    assert not state.exists()
