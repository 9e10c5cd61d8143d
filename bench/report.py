"""Markdown tables from bench/results/*.json, for docs/benchmarks.md (no number is typed by hand).

    python -m bench.report bench/results/A.json [B.json ...]            # one full table per run
    python -m bench.report --scale bench/results/A.json B.json C.json   # one row per run
    python -m bench.report bench/results/<id>-scale-flat-n….json         # a bench.scale run: one row per N
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
        pool = (f"; a pool of {c['actors']} actors: {c['actors']} × {_fmt(c['images_per_s_per_actor'])}, each timed "
                "alone" if c.get("actors", 1) > 1 else "")  # runs before pools have no such figure
        lines.append(f"| model-only ceiling | {_fmt(c['images_per_s'])} | Predictor.forward, {c['precision']}, "
                     f"{c['memory_format']}, batch {c['batch_size']}, {c['threads']} threads, {c['images']} images"
                     f"{pool} | {_memory(c)} |")
        if "unfolded_images_per_s" in c:  # runs before Conv+BatchNorm folding have no such figure
            lines.append(f"| model-only, BatchNorm not folded | {_fmt(c['unfolded_images_per_s'])} | the same, "
                         "eager model as built (reference) | |")
    if "e2e" in results:
        e = results["e2e"]
        memory = _memory(e)
        lines += [f"| batchinfer, steady state | {_fmt(e['steady_images_per_s'])} | after the first output "
                  f"batch ({_fmt(e['first_output_s'])} s after start) | {memory} |",
                  *([f"| batchinfer, middle half | {_fmt(e['middle_half_images_per_s'])} | from a quarter to three "
                     "quarters of the output rows seen | |"] if "middle_half_images_per_s" in e else []),
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


def scale_stage_table(results: dict, source: str = "") -> str:
    """A `python -m bench.scale` run: job and read_images per N, ratios, RSS slopes, the issue's targets."""
    m, s = results["machine"], results["settings"]
    lines = [(f"Run `{source}` — " if source else "") + f"{results['date']}, {m['cpu']}, {m['cores']} cores, "
             f"{m['memory_gib']} GiB; load average (1/5/15 min) {m['load_avg_1_5_15_at_start']} at start, "
             f"{m.get('load_avg_1_5_15_at_end')} at end.",
             f"Command: `{results['command']}` — {s['layout']} keys, {s['size_px']}×{s['size_px']} JPEGs, "
             f"{s['model']}, rows per staged file {s['rows_per_file']}.", "",
             "| N | upload s (0: reused) | job: first output row s | job: whole run s | job img/s | "
             "job driver peak RSS MiB | job CPU-s / 1k img, driver / tree | read_images: first row s | "
             "read_images whole run s | read_images img/s | read_images driver peak RSS MiB | "
             "read_images CPU-s / 1k img, driver / tree | first row job / read_images | "
             "driver RSS job / read_images | load (1 min) at job start |",
             "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for run in sorted(results["runs"], key=lambda run: run["count"]):
        job, anchor, ratios = run.get("job", {}), run.get("read_images", {}), run.get("ratios", {})
        upload = run["dataset"]["upload_s"] if run["dataset"]["uploaded"] else 0
        lines.append(
            f"| {run['count']:,} | {_fmt(upload)} | {_fmt(job.get('first_output_s'))} | "
            f"{_fmt(job.get('whole_run_s'))} | {_fmt(job.get('whole_run_images_per_s'))} | "
            f"{_fmt(job.get('driver_peak_rss_mib'), 0)} | {_fmt(job.get('driver_cpu_s_per_1k'), 2)} / "
            f"{_fmt(job.get('tree_cpu_s_per_1k'), 2)} | {_fmt(anchor.get('first_row_s'))} | "
            f"{_fmt(anchor.get('whole_run_s'))} | {_fmt(anchor.get('whole_run_images_per_s'))} | "
            f"{_fmt(anchor.get('driver_peak_rss_mib'), 0)} | {_fmt(anchor.get('driver_cpu_s_per_1k'), 2)} / "
            f"{_fmt(anchor.get('tree_cpu_s_per_1k'), 2)} | "
            f"{_fmt(ratios.get('first_row_job_over_read_images'), 2)} | "
            f"{_fmt(ratios.get('driver_peak_rss_job_over_read_images'), 2)} | "
            f"{(job.get('load_avg_1_5_15_at_start') or ['n/a'])[0]} |")
    slopes = {stage: slope for stage, slope in results.get("slopes", {}).items() if slope}
    if slopes:
        lines += ["", "| driver peak RSS | bytes / object, smallest → largest N | by step | growth MiB | "
                  "extrapolated to 100 M objects GiB |", "|---|---:|---|---:|---:|"]
        lines += [f"| {stage} | {_fmt(slope['rss_bytes_per_object'])} | "
                  + ", ".join(f"{step['from']:,} → {step['to']:,}: {_fmt(step['bytes_per_object'])}"
                              for step in slope["rss_bytes_per_object_by_step"])
                  + f" | {_fmt(slope['driver_rss_growth_mib'])} | "
                  f"{_fmt(slope['extrapolated_driver_rss_gib_at_100m'], 2)} |" for stage, slope in slopes.items()]
    target = results.get("targets")
    if target:
        lines += ["", f"Targets of issue #16, N {target['from_n']:,} → {target['to_n']:,}: driver peak RSS grows "
                  f"{_fmt(target['driver_rss_growth_mib'])} MiB (target ≤ 20); time to first output row "
                  f"largest / smallest N {_fmt(target['first_output_largest_over_smallest'], 2)} (target ≤ 2); "
                  f"whole-run images/s largest / previous N "
                  f"{_fmt(target['images_per_s_largest_over_previous'], 2)} (target ≥ 1)."]
    return "\n".join(lines + profile_table(results))


def profile_table(results: dict, shown: int = 12) -> list[str]:
    """The CPU profile of each stage at each N: CPU-ms per image by what each process was doing
    (the `shown` largest, the rest summed), against the whole tree's."""
    lines = []
    for run in sorted(results["runs"], key=lambda run: run["count"]):
        for stage in ("job", "read_images"):
            profile = run.get(stage, {}).get("tree_cpu_ms_per_image_by_process")
            if not profile:
                continue
            rows = sorted(profile.items(), key=lambda item: -item[1])
            rest = sum(ms for _, ms in rows[shown:])
            lines += ["", f"CPU profile, {stage} at N = {run['count']:,}: CPU-ms per image by process "
                      f"(tree {_fmt(run[stage]['tree_cpu_s_per_1k'], 2)})", "",
                      "| process | CPU-ms / image | share |", "|---|---:|---:|"]
            total = sum(profile.values()) or 1.0
            lines += [f"| `{name}` | {ms:.3f} | {100 * ms / total:.0f} % |" for name, ms in rows[:shown]]
            if rest:
                lines.append(f"| {len(rows) - shown} others | {rest:.3f} | {100 * rest / total:.0f} % |")
    return lines


def render(results: dict, source: str) -> str:
    """One run's table, of whichever harness wrote it."""
    return scale_stage_table(results, source) if results.get("stage") == "scale" else run_table(results, source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", action="store_true", help="one row per run (the N series)")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    runs = [(str(path), json.loads(path.read_text())) for path in args.files]
    print(scale_table(runs) if args.scale else "\n\n".join(render(r, source) for source, r in runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
