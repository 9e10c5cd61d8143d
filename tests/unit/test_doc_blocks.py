"""Every command block of the docs that talks to a cluster is run by the local cluster's e2e
(tests/cluster, make cluster-e2e) or marked as cloud-only with a reason (tests/cluster/docblocks.py)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.cluster.docblocks import TARGETS_CLUSTER, all_blocks

CLUSTER_TESTS = Path(__file__).resolve().parents[1] / "cluster"


def _blocks_run_by_the_e2e() -> list[str]:
    return [name for path in CLUSTER_TESTS.glob("test_*.py")
            for name in re.findall(r'docblocks\.block\("([^"]+)"\)', path.read_text())]


def test_every_cluster_block_is_run_or_marked_cloud_only() -> None:
    unmarked = [b.where for b in all_blocks() if TARGETS_CLUSTER.search(b.text) and not b.marker]
    assert not unmarked, f"doc blocks that talk to a cluster but are neither run nor cloud-only: {unmarked}"


def test_every_marked_block_is_run_by_exactly_one_e2e_test() -> None:
    run = _blocks_run_by_the_e2e()
    for block in all_blocks():
        if block.marker and not block.cloud_only:
            assert run.count(block.marker) == 1, f"{block.where} ({block.marker}) is run by {run.count(block.marker)} tests"
    names = {b.marker for b in all_blocks()}
    assert set(run) <= names, f"tests run blocks no doc marks: {set(run) - names}"


def test_cloud_only_blocks_say_why() -> None:
    for block in all_blocks():
        if block.cloud_only:
            assert len(block.marker.split(":", 1)[1].strip()) > 10, block.where
