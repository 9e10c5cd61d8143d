"""Driver memory of the write stage: Ray Data's `Dataset.write_datasink` (which materializes the write,
keeping every write task's result block to the end) against `batchinfer.staging.write_streamed` (the
same Write operator, each result dropped as it is read), at two numbers of write tasks.

    python -m bench.write_memory --tasks 500,5000

Each (way, N) runs in a fresh Python process that starts a local Ray (2 CPUs) with the job's driver
settings (driver_memory.py: bounded block stats, queued-blocks cap, heap arenas and trimming), warms up
with 20 write tasks, then writes N one-block tasks (10 rows each) to a datasink that returns (task,
rows) as the job's does; it prints the driver's RSS before and after (6 s after the write, past a heap
trim). The growth per write task is the slope between the two Ns. Figures, ratios and the machine go
to bench/results/<time>-write-memory[-<label>].json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import ray
from ray.data import Datasink

from batchinfer.driver_memory import bound_block_stats, cap_queued_blocks, heap_trimmed, limit_heap_arenas
from batchinfer.staging import write_streamed
from bench.run import machine

RESULTS = Path(__file__).parent / "results"
WAYS = ("write_datasink", "write_streamed")
SETTLE_S = 6.0  # past one heap trim (driver_memory.TRIM_INTERVAL_S)


class TaskRowsSink(Datasink):
    """Writes nothing; each write task returns (task, rows), as the job's staging datasink does."""

    def write(self, blocks, ctx) -> dict[str, int]:
        return {"task": ctx.task_idx, "rows": sum(len(block) for block in blocks)}


def _rss_mib() -> float:
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["VmRSS"].split()[0]) / 1024


def _write(way: str, tasks: int) -> None:
    dataset = ray.data.range(tasks * 10, override_num_blocks=tasks).map_batches(lambda batch: batch)
    if way == "write_datasink":
        dataset.write_datasink(TaskRowsSink(), ray_remote_args={"num_cpus": 0})
    else:
        write_streamed(dataset, TaskRowsSink(), {"num_cpus": 0})


def measure(way: str, tasks: int) -> dict:
    """In this process: the driver's RSS before and after `tasks` write tasks written `way`."""
    limit_heap_arenas()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    bound_block_stats(context)
    cap_queued_blocks(context)
    with heap_trimmed():
        _write(way, 20)
        time.sleep(SETTLE_S)
        before = _rss_mib()
        clock = time.monotonic()
        _write(way, tasks)
        seconds = time.monotonic() - clock
        time.sleep(SETTLE_S)
    after = _rss_mib()
    ray.shutdown()
    return {"way": way, "tasks": tasks, "rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
            "growth_mib": round(after - before, 1), "write_s": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="500,5000", help="two numbers of write tasks, comma-separated")
    parser.add_argument("--label", default="")
    parser.add_argument("--one", nargs=2, metavar=("WAY", "TASKS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return
    low, high = sorted(int(n) for n in args.tasks.split(","))
    runs = [json.loads(subprocess.run([sys.executable, "-m", "bench.write_memory", "--one", way, str(n)],
                                      check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            for way in WAYS for n in (low, high)]
    for run in runs:
        print(f"{run['way']:15} {run['tasks']:>6} tasks: driver RSS {run['rss_before_mib']} -> "
              f"{run['rss_after_mib']} MiB (+{run['growth_mib']}), write {run['write_s']} s")
    growth = {(run["way"], run["tasks"]): run["growth_mib"] for run in runs}
    slope = {way: round(1024 * (growth[way, high] - growth[way, low]) / (high - low), 2) for way in WAYS}
    print(f"KiB per write task: write_datasink {slope['write_datasink']}, write_streamed "
          f"{slope['write_streamed']}; saved {round(slope['write_datasink'] - slope['write_streamed'], 2)}")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{stamp}-write-memory{'-' + args.label if args.label else ''}.json"
    path.write_text(json.dumps({"machine": machine(), "runs": runs, "kib_per_write_task": slope}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
