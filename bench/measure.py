"""What the harness samples while a stage runs: memory of this process tree, output files as they land."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray


def _children(pid: int) -> list[int]:
    """Child pids of one process, from /proc/<pid>/task/<tid>/children."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return children


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _title(pid: int) -> str:
    """What a process is, for the memory breakdown: Ray's title (`ray::MapWorker(...)`, `ray::IDLE`)
    or the program's name (raylet, gcs_server, python for the driver)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""
    title = command.split(" ")[0]
    return title.split("(")[0] if title.startswith("ray::") else Path(title).name


def _stage(pid: int) -> str:
    """What a process is doing, for the CPU profile: Ray's whole title less a method name
    (`ray::MapBatches(Preprocessor)`, `ray::MapWorker(MapBatches(Predictor))`, `ray::IDLE`), or the
    program's name (raylet, gcs_server, python for the driver)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""
    title = command.split(" ")[0]
    if not title.startswith("ray::"):
        return Path(title).name
    return re.sub(r"\.[A-Za-z_]\w*(\(\))?$", "", title)  # ray::_StatsActor.update_metrics -> ray::_StatsActor


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; PSS shares object-store pages fairly between processes."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                values[name] = int(rest.split()[0])
    except OSError:
        return 0, 0
    return values.get("Rss", 0), values.get("Pss", 0)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds one process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


_TICKS = os.sysconf("SC_CLK_TCK")


def status_mib(name: str) -> float:
    """One memory line of this process's /proc/self/status (VmRSS, VmHWM, ...), in MiB."""
    with open("/proc/self/status") as status:
        return round(int(next(line for line in status if line.startswith(f"{name}:")).split()[1]) / 1024, 1)


def own_peak_rss_mib() -> float:
    """This process's peak RSS as the kernel keeps it for its own memory (VmHWM), in MiB. Not getrusage's
    ru_maxrss: that also holds the peak of the process this one was started from (exec keeps the old
    image's high-water mark), e.g. a harness that listed a million keys before starting the driver."""
    return status_mib("VmHWM")


class ProcessSampler:
    """Samples, every `interval_s`, this process (or the processes in `roots`) and all its descendants
    (the driver, Ray's GCS/raylet/workers/object store), leaving out processes named in `exclude` and their subtrees
    (the SeaweedFS server): the peak of their summed RSS and PSS, and the CPU seconds they used
    while the sampler ran (a process that ends between two samples loses at most one interval). Keeps
    the summed PSS of every sample (to show whether memory levels off), at the peak, PSS by kind of
    process, and this process's own (the driver's) peak RSS and CPU seconds apart."""

    def __init__(self, exclude: frozenset[str] = frozenset({"weed"}), interval_s: float = 1.0,
                 roots: tuple[int, ...] = ()) -> None:
        self.roots = roots or (os.getpid(),)
        self.exclude = exclude
        self.interval_s = interval_s
        self.peak_rss_kib = self.peak_pss_kib = 0
        self.peak_processes = 0
        self.driver_peak_rss_kib = 0
        self._own_cpu_s = 0.0
        self.peak_by_title: dict[str, float] = {}
        # (seconds since start, summed PSS KiB, this process's RSS KiB) of every sample
        self.timeline: list[tuple[float, int, int]] = []
        self._started = time.monotonic()
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self.cpu_s_by_stage: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        pending, rss, pss, count, driver_rss = list(self.roots), 0, 0, 0, 0
        by_title: dict[str, float] = {}
        while pending:
            pid = pending.pop()
            if _name(pid) in self.exclude:
                continue
            process_rss, process_pss = _memory_kib(pid)
            if pid == os.getpid():
                driver_rss = process_rss
                self.driver_peak_rss_kib = max(self.driver_peak_rss_kib, process_rss)
            rss, pss, count = rss + process_rss, pss + process_pss, count + 1
            title = _title(pid)
            by_title[title] = by_title.get(title, 0) + process_pss
            cpu = _cpu_s(pid)
            self._cpu_start.setdefault(pid, 0.0 if self._thread.is_alive() else cpu)  # new since start: all of it
            used = cpu - self._cpu_last.get(pid, self._cpu_start[pid])
            if used > 0:
                stage = _stage(pid) or "?"
                self.cpu_s_by_stage[stage] = self.cpu_s_by_stage.get(stage, 0.0) + used
            self._cpu_last[pid] = max(cpu, self._cpu_last.get(pid, 0.0))
            pending.extend(_children(pid))
        self.timeline.append((time.monotonic() - self._started, pss, driver_rss))
        if pss > self.peak_pss_kib:
            self.peak_by_title = by_title
        self.peak_rss_kib, self.peak_pss_kib = max(self.peak_rss_kib, rss), max(self.peak_pss_kib, pss)
        self.peak_processes = max(self.peak_processes, count)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()
        self._own_cpu_s = time.thread_time()  # this sampling thread's CPU, left out of the driver's

    def __enter__(self) -> "ProcessSampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def cpu_s(self) -> float:
        return sum(self._cpu_last[pid] - self._cpu_start[pid] for pid in self._cpu_last)

    def driver_cpu_s(self) -> float:
        """CPU seconds this process (the driver) used while the sampler ran, less the sampling thread's."""
        pid = os.getpid()
        return max(0.0, self._cpu_last.get(pid, 0.0) - self._cpu_start.get(pid, 0.0) - self._own_cpu_s)

    def peaks_by_part(self, column: int, parts: int) -> list[float]:
        """Peak of one timeline column (1: summed PSS, 2: this process's RSS), in MiB, in each of `parts`
        equal spans of the sampled time: flat when memory is bounded, and where it grows if it does."""
        end = self.timeline[-1][0] if self.timeline else 0.0
        peaks = [0] * parts
        for sample in self.timeline:
            index = min(parts - 1, int(parts * sample[0] / end)) if end else parts - 1
            peaks[index] = max(peaks[index], sample[column])
        return [round(kib / 1024, 1) for kib in peaks]

    def peak(self) -> dict:
        by_title = sorted(self.peak_by_title.items(), key=lambda item: -item[1])
        return {"peak_rss_mib": round(self.peak_rss_kib / 1024, 1),
                "peak_pss_mib": round(self.peak_pss_kib / 1024, 1), "processes": self.peak_processes,
                "cpu_s": round(self.cpu_s(), 2), "driver_peak_rss_mib": round(self.driver_peak_rss_kib / 1024, 1),
                "driver_cpu_s": round(self.driver_cpu_s(), 2), "peak_pss_mib_by_quarter": self.peaks_by_part(1, 4),
                "driver_peak_rss_mib_by_tenth": self.peaks_by_part(2, 10),
                "peak_pss_mib_by_process": {title or "?": round(kib / 1024, 1) for title, kib in by_title},
                "cpu_s_by_process": {stage: round(cpu, 3) for stage, cpu in
                                     sorted(self.cpu_s_by_stage.items(), key=lambda item: -item[1])}}


class DriverRssWatch:
    """This process's memory every `interval_s` (20 ms), by kind: anonymous (the heap), file-backed, and
    shared memory (Ray's object store, mapped in when the driver reads an object). Each sample also
    takes the kernel's high-water mark and resets it (`/proc/self/clear_refs` 5, Linux ≥ 4.0), so a
    sample's peak is the true peak since the sample before, however short (a buffer mapped, filled and
    unmapped between two samples included), not only the RSS at the sample. Keeps the largest sample of
    each whole second since the start, so a peak can be placed in a phase. Where the mark cannot be reset,
    a sample's peak is its RSS. While it runs, VmHWM (`own_peak_rss_mib`) only covers the time since its
    last reset: `lifetime_peak_mib` is the process's whole-life peak."""

    KINDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        # second since start: (peak since the sample before, then RSS, anonymous, file, shared at the sample) KiB
        self.by_second: dict[int, tuple[int, ...]] = {}
        self.cpu_s = 0.0  # the watching thread's own CPU seconds
        self.resets = False  # whether each sample reset the high-water mark
        self._before_kib = 0  # the high-water mark when the watch started
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-driver-rss", daemon=True)

    def _read(self) -> tuple[int, ...]:
        values = dict.fromkeys(self.KINDS, 0)
        with open("/proc/self/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in values:
                    values[name] = int(rest.split()[0])
        return tuple(values[kind] for kind in self.KINDS)

    def _reset_high_water(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
            return True
        except OSError:
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            high_water, *now = self._read()
            if self.resets:
                self._reset_high_water()
            sample = (max(high_water, now[0]) if self.resets else now[0], *now)
            second = int(time.monotonic() - self._started)
            if sample[0] > self.by_second.get(second, (0,))[0]:
                self.by_second[second] = sample
        self.cpu_s = time.thread_time()

    def __enter__(self) -> "DriverRssWatch":
        self._before_kib = self._read()[0]
        self.resets = self._reset_high_water()
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def lifetime_peak_mib(self) -> float:
        """The process's peak RSS over its whole life so far, in MiB."""
        peaks = [self._before_kib, self._read()[0], *(sample[0] for sample in self.by_second.values())]
        return round(max(peaks) / 1024, 1)

    def peaks(self, phases: dict[str, tuple[float, float]]) -> dict:
        """The peak overall (when, in which of `phases` — name: (start, end) in seconds since the start —
        and the RSS by kind at the sample that saw it, MiB), the peak in each phase, and the peak before
        the watch started."""
        def mib(kib: int) -> float:
            return round(kib / 1024, 1)

        def phase_of(second: int) -> str:
            return next((name for name, (start, end) in phases.items() if start <= second < end), "after")

        if not self.by_second:
            return {}
        second, sample = max(self.by_second.items(), key=lambda item: item[1][0])
        by_phase: dict[str, float] = {}
        for at, each in self.by_second.items():
            by_phase[phase_of(at)] = max(by_phase.get(phase_of(at), 0.0), mib(each[0]))
        kinds = ("peak_mib", "rss_mib", "anon_mib", "file_mib", "shmem_mib")
        return {"driver_peak_rss_mib_fine": mib(sample[0]),
                "driver_peak_moment": {"at_s": second, "phase": phase_of(second),
                                       **{kind: mib(kib) for kind, kib in zip(kinds, sample)}},
                "driver_peak_rss_mib_fine_by_phase": by_phase,
                "driver_peak_rss_mib_before_watch": mib(self._before_kib),
                "driver_peak_is_high_water": self.resets}


class OutputWatcher:
    """Lists `folder` (recursively) every `interval_s` and notes when each Parquet file first appears
    and how many rows it holds: the times of the job's output batches. With `first_only` it stops
    after the first file: a listing of every file every `interval_s` costs the storage server (and
    this process) more the more files a run has staged, which would slow the largest runs most."""

    def __init__(self, filesystem: pafs.FileSystem, folder: str, interval_s: float = 0.25,
                 first_only: bool = False) -> None:
        self.filesystem = filesystem
        self.folder = folder
        self.interval_s = interval_s
        self.first_only = first_only
        self.seen: dict[str, tuple[float, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def poll(self) -> None:
        now = time.monotonic()
        try:
            infos = self.filesystem.get_file_info(pafs.FileSelector(self.folder, recursive=True,
                                                                    allow_not_found=True))
        except OSError:
            return
        for info in infos:
            if info.is_file and info.path.endswith(".parquet") and info.path not in self.seen:
                try:
                    rows = pq.ParquetFile(self.filesystem.open_input_file(info.path)).metadata.num_rows
                except (OSError, pa.ArrowInvalid):  # moved away by the commit, or still being written
                    continue                            # (a local folder): seen next time, or never
                self.seen[info.path] = (now, rows)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()
            if self.first_only and self.seen:
                return

    def __enter__(self) -> "OutputWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def batches(self) -> list[tuple[float, int]]:
        """(monotonic time first seen, rows) per output file, in order of appearance."""
        return sorted(self.seen.values())


def spilled_mib() -> float:
    """MiB the Ray object store spilled to disk so far (`ray memory --stats-only`, Ray's public CLI)."""
    summary = subprocess.run([str(Path(sys.executable).with_name("ray")), "memory", "--stats-only", "--address",
                              ray.get_runtime_context().gcs_address], check=True, capture_output=True, text=True,
                             timeout=120).stdout
    match = re.search(r"Spilled (\d+(?:\.\d+)?) MiB", summary)
    return float(match.group(1)) if match else 0.0
