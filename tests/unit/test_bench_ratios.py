"""bench.run's ratios: the stage-sum limit a fast model is measured against (issue #33)."""

from __future__ import annotations

import pytest

from bench.run import middle_half_rate, ratios, stage_sum_limit


def test_stage_sum_limit_shares_the_cores_between_model_and_decode() -> None:
    # 2 cores; the model alone 30 images/s on both (1/15 core-s an image), decode 30 a core (1/30)
    assert stage_sum_limit(2, 30.0, 30.0) == pytest.approx(20.0)
    # decode for free: the model's own ceiling
    assert stage_sum_limit(4, 100.0, float("inf")) == pytest.approx(100.0)


def test_ratios_hold_the_limit_only_when_decode_was_measured() -> None:
    results = {"machine": {"cores": 2}, "ceiling": {"images_per_s": 30.0},
               "e2e": {"steady_images_per_s": 17.0, "job_images_per_s": 16.0, "whole_run_images_per_s": 12.0,
                       "middle_half_images_per_s": 15.0}}
    assert "stage_sum_limit_images_per_s" not in ratios(results)
    measured = ratios({**results, "decode": {"images_per_s_per_core": 30.0}})
    assert measured["stage_sum_limit_images_per_s"] == 20.0
    assert measured["e2e_steady_over_stage_sum_limit"] == 0.85
    assert measured["e2e_middle_half_over_stage_sum_limit"] == 0.75


def test_middle_half_rate_is_not_lifted_by_a_late_first_file_and_a_burst() -> None:
    # 100 images: 10 files of 10 rows, one a second from 30 s: the rows from 30 (file 3) to 80 (file 8)
    steady = [(30.0 + second, 10) for second in range(10)]
    assert middle_half_rate(steady, 100) == 10.0
    # the same run whose files all landed at the end, at once: no rate, rather than a huge one
    assert middle_half_rate([(40.0, 10)] * 10, 100) is None
    assert middle_half_rate([(1.0, 100)], 100) is None
