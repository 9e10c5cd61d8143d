"""The tests' own polling helper (tests/support.py wait_until)."""

from __future__ import annotations

import itertools

import pytest

from tests.support import GaveUp, wait_until


def test_returns_what_the_condition_found_once_it_holds() -> None:
    answers = iter([None, [], "found"])
    assert wait_until(lambda: next(answers), timeout_s=60, what="an answer", interval_s=0) == "found"


def test_gives_up_at_once_when_waiting_is_pointless() -> None:
    calls = itertools.count(1)
    with pytest.raises(GaveUp, match="gave up waiting for the job's output: the job ended"):
        wait_until(lambda: next(calls) > 100, timeout_s=60, what="the job's output",
                   give_up=lambda: "the job ended", interval_s=0)
    assert next(calls) == 2  # looked once, then gave up


def test_times_out_naming_what_it_waited_for() -> None:
    with pytest.raises(GaveUp, match="no staged file within 0 s"):
        wait_until(lambda: False, timeout_s=0, what="staged file", interval_s=0)
