"""The network guard, checked after every other scenario (files run in name order): no packet to a
private range left through the outward interface, and no cluster range routes out through it."""

from __future__ import annotations

from tests.cluster.conftest import Cluster, guard_report


def test_guard_dropped_nothing_and_cluster_ranges_stay_local(cluster: Cluster, guard_baseline) -> None:
    counters, routes = guard_report(cluster)
    outward = cluster.sh("ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == \"dev\") print $(i + 1)}'").stdout.strip()
    grown = {rule: counters[rule] - guard_baseline.get(rule, 0) for rule in counters
             if counters[rule] != guard_baseline.get(rule, 0)}
    dropped = {rule: n for rule, n in grown.items() if rule.startswith("drop")}
    log = cluster.sh("dmesg 2>/dev/null | grep 'batchinfer-guard:' | tail -5", check=False).stdout
    assert not dropped, f"packets dropped by the guard during the e2e (something tried to leave the machine): {dropped}\n{log}"
    assert routes and all(dev and dev != outward for dev in routes.values()), routes
    refused = {rule: n for rule, n in grown.items() if rule.startswith("refused")}
    print(f"guard: no drop since the probe {counters}; routes {routes}; cloud metadata requests refused "
          f"(Ray's dashboard on each head): {refused or 0}")
