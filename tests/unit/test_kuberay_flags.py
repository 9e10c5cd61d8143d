"""rayStartParams -> `ray start` flags, by KubeRay v1.7.0's rule (tests/chart/kuberay_rules.py
ray_start_flags, after common/pod.go convertParamMap), as the chart and container tests start Ray."""

from __future__ import annotations

from tests.chart.kuberay_rules import ray_start_flags


def test_values_become_key_equals_value_in_sorted_order() -> None:
    assert ray_start_flags({"num-cpus": "0", "dashboard-host": "0.0.0.0", "port": 6379}) == [
        "--dashboard-host=0.0.0.0", "--num-cpus=0", "--port=6379"]


def test_true_is_a_bare_flag_and_false_drops_it() -> None:
    assert ray_start_flags({"block": "true", "disable-usage-stats": "True", "dashboard": "false",
                            "no-monitor": "FALSE"}) == ["--block", "--disable-usage-stats"]


def test_flags_that_take_an_explicit_boolean_keep_their_value() -> None:
    assert ray_start_flags({"include-dashboard": "false", "log-color": "true", "include-log-monitor": "False"}) == [
        "--include-dashboard=false", "--include-log-monitor=False", "--log-color=true"]


def test_other_values_are_passed_verbatim() -> None:
    assert ray_start_flags({"resources": '"{\\"a100\\": 1}"', "metrics-export-port": "8080", "yes": "yes"}) == [
        "--metrics-export-port=8080", '--resources="{\\"a100\\": 1}"', "--yes=yes"]


def test_no_params_no_flags() -> None:
    assert ray_start_flags({}) == []
