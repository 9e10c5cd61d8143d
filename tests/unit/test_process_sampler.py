"""The one memory sampler (bench/measure.py ProcessSampler, also used by tests/reliability/test_load.py),
on a real child process that holds a known amount of memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.measure import DriverRssWatch, ProcessSampler, _memory_kib

HELD_MIB = 64
HOLDER = f"import sys; held = bytearray({HELD_MIB} << 20); print('ready', flush=True); sys.stdin.read()"


@pytest.fixture
def holder():
    """A Python process holding HELD_MIB MiB (written, so resident) until its stdin closes."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline() == "ready\n"
    yield process
    process.stdin.close()
    process.wait(timeout=30)


def test_roots_limit_the_sample_to_those_processes_and_their_children(holder) -> None:
    sampler = ProcessSampler(roots=(holder.pid,))
    sampler.sample()
    assert sampler.peak_processes == 1
    assert HELD_MIB << 10 <= sampler.peak_rss_kib and HELD_MIB << 10 <= sampler.peak_pss_kib


def test_default_root_is_this_process_and_its_descendants(holder) -> None:
    sampler = ProcessSampler()
    sampler.sample()
    only_holder = ProcessSampler(roots=(holder.pid,))
    only_holder.sample()
    assert sampler.peak_processes >= 2 and sampler.peak_rss_kib > only_holder.peak_rss_kib


def test_driver_rss_by_part_follows_this_process(holder) -> None:
    """The third timeline column is this process's RSS (the driver's), not the holder's or the sum."""
    sampler = ProcessSampler()
    sampler.sample()
    kept = bytearray(HELD_MIB << 20)  # written, so resident: this process grows by HELD_MIB
    sampler.sample()
    [first, second] = sampler.peaks_by_part(2, 2)
    assert second - first >= HELD_MIB * 0.9 and second == round(sampler.driver_peak_rss_kib / 1024, 1)
    # The summed PSS includes the holder's HELD_MIB on top of this process's own PSS (not compared with
    # this process's RSS: its shared pages count in its RSS whole but in the PSS split between every
    # process that maps them, such as other Python processes with torch loaded).
    own_pss_mib = _memory_kib(os.getpid())[1] / 1024
    assert sampler.peaks_by_part(1, 2)[1] >= own_pss_mib + HELD_MIB / 2
    del kept


BURNER = ("import sys, time; print('ready', flush=True); sys.stdin.readline(); end = time.process_time() + 0.5\n"
          "while time.process_time() < end: pass\nprint('done', flush=True); sys.stdin.read()")


def test_cpu_profile_names_what_each_process_did() -> None:
    """A child titled as Ray titles a worker running a method (argv[0]) burns 0.5 CPU-s between two
    samples: the profile puts them under that title less the method, and sums to the tree's CPU."""
    process = subprocess.Popen(["ray::MapBatches(Burn).run", "-c", BURNER], executable=sys.executable,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        sampler = ProcessSampler(roots=(process.pid,))
        sampler.sample()
        process.stdin.write("go\n")
        process.stdin.flush()
        assert process.stdout.readline() == "done\n"
        sampler.sample()
    finally:
        process.stdin.close()
        process.wait(timeout=30)
    profile = sampler.peak()["cpu_s_by_process"]
    assert list(profile) == ["ray::MapBatches(Burn)"] and profile["ray::MapBatches(Burn)"] >= 0.45
    assert sum(profile.values()) == pytest.approx(sampler.cpu_s(), abs=0.01)


def test_the_driver_watch_places_a_short_peak_in_its_phase() -> None:
    """A peak of HELD_MIB lasting a tenth of a second, a second into the watch: seen, in the anonymous
    memory, in the phase that held it, while the phase before stays below it."""
    with DriverRssWatch() as watch:
        time.sleep(1.1)
        held = bytearray(HELD_MIB << 20)  # written: resident
        time.sleep(0.1)
        del held
        time.sleep(0.1)
    peaks = watch.peaks({"before": (0.0, 1.0), "peak": (1.0, 3.0)})
    moment = peaks["driver_peak_moment"]
    assert moment["phase"] == "peak" and moment["at_s"] == 1
    assert moment["peak_mib"] == peaks["driver_peak_rss_mib_fine"] >= moment["rss_mib"]
    assert moment["anon_mib"] >= HELD_MIB
    assert peaks["driver_peak_rss_mib_fine_by_phase"]["before"] <= moment["peak_mib"] - HELD_MIB + 8
    assert 0 < watch.cpu_s < 1


def test_the_driver_watch_sees_a_peak_shorter_than_its_interval() -> None:
    """HELD_MIB allocated, written and freed between two samples half a second apart: the sample after
    it still has it, from the kernel's high-water mark, which each sample resets."""
    with DriverRssWatch(interval_s=0.5) as watch:
        time.sleep(0.7)
        before = watch._read()[1]
        held = bytearray(HELD_MIB << 20)
        del held
        time.sleep(0.6)
    if not watch.resets:
        pytest.skip("this kernel does not let a process reset its high-water mark")
    assert watch.peaks({"all": (0.0, 2.0)})["driver_peak_rss_mib_fine"] >= (before >> 10) + HELD_MIB - 1
    assert watch.lifetime_peak_mib() >= (before >> 10) + HELD_MIB - 1


def test_own_peak_is_this_process_not_the_one_that_started_it() -> None:
    """A child started while this process holds 256 MiB (more than the child's own peak, about 100 MiB
    with Ray imported): getrusage's ru_maxrss in the child includes this process's peak (exec keeps it),
    its own_peak_rss_mib does not."""
    held = bytearray(256 << 20)
    child = ("import resource; from bench.measure import own_peak_rss_mib; "
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, own_peak_rss_mib())")
    inherited, own = map(float, subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                                               check=True).stdout.split())
    del held
    assert inherited >= 256 and own < inherited - 128
