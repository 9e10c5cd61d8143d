"""Markdown tables from bench/results/*.json, for docs/benchmarks.md (no number is typed by hand).

    python -m bench.report bench/results/A.json [B.json ...]            # one full table per run
    python -m bench.report --scale bench/results/A.json B.json C.json   # one row per run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _fmt(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _memory(stage: dict) -> str:
    return (f"{_fmt(stage['peak_pss_mib'], 0)} / {_fmt(stage['peak_rss_mib'], 0)}"
            + (f", {_fmt(stage['cpu_s'])}" if "cpu_s" in stage else ""))


def run_table(results: dict, source: str) -> str:
    """Every stage of one run, its ratios, and where it ran."""
    m, s = results["machine"], results["settings"]
    lines = [f"Run `{source}` — {results['date']}, {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; "
             f"load average (1/5/15 min) {m['load_avg_1_5_15_at_start']} at start, "
             f"{m.get('load_avg_1_5_15_at_end')} at end.",
             f"Command: `{results['command']}` — {s['count']} JPEGs {s['size'][0]}×{s['size'][1]} "
             f"(~{results['dataset']['mean_bytes'] // 1000} KB), {s['model']} (weights none), batch {s['batch_size']}.",
             "", "| stage | images/s | detail | peak PSS / RSS MiB, CPU s |", "|---|---:|---|---:|"]
    if "decode" in results:
        d = results["decode"]
        lines.append(f"| decode + preprocess, per core | {_fmt(d['images_per_s_per_core'])} | "
                     f"{d['images']} images on one thread, CPU time | {_memory(d)} |")
    if "ceiling" in results:
        c = results["ceiling"]
        lines.append(f"| model-only ceiling | {_fmt(c['images_per_s'])} | Predictor.forward, {c['precision']}, "
                     f"{c['memory_format']}, batch {c['batch_size']}, {c['threads']} threads, {c['images']} images | "
                     f"{_memory(c)} |")
        if "unfolded_images_per_s" in c:  # runs before Conv+BatchNorm folding have no such figure
            lines.append(f"| model-only, BatchNorm not folded | {_fmt(c['unfolded_images_per_s'])} | the same, "
                         "eager model as built (reference) | |")
    if "e2e" in results:
        e = results["e2e"]
        memory = _memory(e)
        lines += [f"| batchinfer, steady state | {_fmt(e['steady_images_per_s'])} | after the first output "
                  f"batch ({_fmt(e['first_output_s'])} s after start) | {memory} |",
                  f"| batchinfer, pipeline | {_fmt(e['job_images_per_s'])} | job's own images_per_s "
                  f"(pipeline_s {_fmt(e['job_pipeline_s'])} s) | |",
                  f"| batchinfer, whole run | {_fmt(e['whole_run_images_per_s'])} | {_fmt(e['whole_run_s'])} s "
                  f"incl. start-up {_fmt(e['job_startup_s'])} s (Ray, listing, model check); spilled "
                  f"{_fmt(e['object_store_spilled_mib'], 0)} MiB | |"]
    if "baseline" in results:
        b = results["baseline"]
        memory = _memory(b)
        batch = results["settings"].get("baseline_batch_size", results["settings"]["batch_size"])
        lines += [f"| naive baseline, steady state | {_fmt(b['steady_images_per_s'])} | batch {batch}; after the "
                  f"first output batch ({_fmt(b['first_output_s'])} s after start) | {memory} |",
                  f"| naive baseline, pipeline | {_fmt(b['pipeline_images_per_s'])} | after Ray start-up "
                  f"({_fmt(b['ray_start_s'])} s) | |",
                  f"| naive baseline, whole run | {_fmt(b['whole_run_images_per_s'])} | {_fmt(b['whole_run_s'])} s | |"]
    if results.get("ratios"):
        lines += ["", "| ratio | value |", "|---|---:|"]
        lines += [f"| {name} | {_fmt(value, 2)} |" for name, value in results["ratios"].items()]
    return "\n".join(lines)


def scale_table(runs: list[tuple[str, dict]]) -> str:
    """One row per run: how throughput and memory move with N."""
    lines = ["| N | JPEG size | model | ceiling img/s | e2e steady img/s | e2e pipeline img/s | e2e whole img/s | "
             "start-up s | steady / ceiling | pipeline / ceiling | peak PSS MiB | PSS peak per quarter of the run "
             "MiB | peak RSS MiB | spilled MiB | load at start | result |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|"]
    for source, r in sorted(runs, key=lambda run: run[1]["settings"]["count"]):
        s, e, c = r["settings"], r["e2e"], r.get("ceiling", {})
        lines.append(f"| {s['count']} | {s['size'][0]}×{s['size'][1]} | {s['model']} | "
                     f"{_fmt(c.get('images_per_s'))} | {_fmt(e['steady_images_per_s'])} | "
                     f"{_fmt(e['job_images_per_s'])} | {_fmt(e['whole_run_images_per_s'])} | "
                     f"{_fmt(e['job_startup_s'])} | {_fmt(r['ratios'].get('e2e_steady_over_ceiling'), 2)} | "
                     f"{_fmt(r['ratios'].get('e2e_pipeline_over_ceiling'), 2)} | {_fmt(e['peak_pss_mib'], 0)} | "
                     f"{' / '.join(_fmt(q, 0) for q in e.get('peak_pss_mib_by_quarter', [])) or 'n/a'} | "
                     f"{_fmt(e['peak_rss_mib'], 0)} | {_fmt(e['object_store_spilled_mib'], 0)} | "
                     f"{r['machine']['load_avg_1_5_15_at_start'][0]} | `{source}` |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", action="store_true", help="one row per run (the N series)")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    runs = [(str(path), json.loads(path.read_text())) for path in args.files]
    print(scale_table(runs) if args.scale else "\n\n".join(run_table(r, source) for source, r in runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
