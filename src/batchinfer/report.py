"""The run report: one self-contained HTML page next to the run's summary.

Everything on it comes from the committed Parquet files through pyarrow: streaming group counts (Acero's
hash aggregation over a scan of a few columns), compute functions (`quantile`, `select_k`, `value_counts`)
over the classified rows' scores, never row by row in Python; charts are matplotlib SVG inlined in the
page, thumbnails small JPEG data URIs. No script, no stylesheet or font from elsewhere: it opens offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from datetime import datetime
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyarrow import acero
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.axis import Axis
from matplotlib.ticker import MaxNLocator, StrMethodFormatter
from PIL import Image, ImageOps

from batchinfer import columns as col
from batchinfer.config import S3Options, UserError
from batchinfer.layout import REPORT, SUMMARY, Output
from batchinfer.storage import StorageUnavailable, read_bytes, read_many, resolve, write_bytes

LOW_CONFIDENCE = 0.5    # a prediction whose top-1 probability is below this counts as low-confidence
SCORE_BINS = 20         # confidence histogram: bins of 0.05
TOP_CLASSES = 15
TOP_ERROR_KINDS = 10
ERROR_EXAMPLES = 3      # example paths per error kind
TRUE_CLASSES = 20       # accuracy bars: the most frequent true classes
TOP_CONFUSIONS = 10
THUMBNAILS = 12         # lowest-confidence images shown
THUMBNAIL_PX = 160
THUMBNAIL_READ_TIMEOUT_S = 30.0
COLORS = {"bar": "#3b6ea8", "low": "#d9822b", "error": "#c23030", "ok": "#2e8b57", "line": "#555555"}
# Scans read one batch of one file ahead: pyarrow's default read-ahead (16 batches, 4 files) let the
# report's peak grow with the output (bench.report_html: +61 MiB from 100k to 1M rows, +30 MiB with this).
_SCAN = {"batch_readahead": 1, "fragment_readahead": 1}


def load_summary(output: Output) -> dict:
    """The finished run's summary; a user mistake when the output holds no finished run."""
    if not output.is_committed():
        raise UserError(f"{output.location.uri()} holds no finished run (no _SUCCESS): give the --output "
                        "of a run that completed, or finish it with `batchinfer run ... --resume`")
    return json.loads(read_bytes(output.fs, output.meta.join(SUMMARY)))


def report_command(output_uri: str, destination: str | None, s3: S3Options) -> str:
    """`batchinfer report`: rebuild the report of a finished output; return where it went."""
    if destination is not None and not os.path.isdir(os.path.dirname(os.path.abspath(destination))):
        raise UserError(f"-o {destination}: its directory does not exist; create it or choose another file")
    output = Output(resolve(output_uri, s3), s3)
    return f"report: {write_report(output, load_summary(output), destination)}"


def write_report(output: Output, summary: dict, destination: str | None = None) -> str:
    """Build the report and write it next to the summary (or to the local file `destination`);
    return where it went."""
    page = build_report(output, summary).encode()
    if destination is not None:
        with open(destination, "wb") as file:
            file.write(page)
        return destination
    path = output.meta.join(REPORT)
    write_bytes(output.fs, path, page)
    return output.meta.uri(path)


def predictions(output: Output, summary: dict) -> ds.Dataset:
    """The run's committed Parquet files, as a dataset to scan column subsets of."""
    paths = [output.location.join(entry["name"]) for entry in summary["files"]]
    return (ds.dataset(paths, filesystem=output.fs, format="parquet") if paths
            else ds.dataset([], schema=col.prediction_schema(with_truth=False)))


def error_kinds(table: pa.Table) -> pa.ChunkedArray:
    """Each error row's kind: the `error_kind` column when the output has one, else the message with
    what varies between rows of one cause (URIs, quoted names, addresses, numbers) blanked out."""
    if col.ERROR_KIND in table.column_names:
        return table[col.ERROR_KIND]
    kinds = table[col.ERROR]
    for pattern, replacement in ((r"\S+://\S+", "<uri>"), (r"'[^']*'", "'…'"), (r'"[^"]*"', '"…"'),
                                 (r"0x[0-9a-fA-F]+", "<address>"), (r"\d+", "N")):
        kinds = pc.replace_substring_regex(kinds, pattern, replacement)
    return pc.utf8_slice_codeunits(kinds, 0, 160)


def _top(table: pa.Table, keys: list[str], limit: int) -> list[dict]:
    """The `limit` rows of an aggregated `table` with the largest `count_all`, ties by key (nulls last)."""
    order = [("count_all", "descending"), *[(key, "ascending", "at_end") for key in keys]]
    return table.sort_by(order).slice(0, limit).to_pylist()


def _counts(table: pa.Table, keys: list[str], limit: int) -> list[dict]:
    """The `limit` most frequent key combinations of `table`, with their count, most frequent first."""
    return _top(table.group_by(keys).aggregate([([], "count_all")]), keys, limit)


def _count_groups(dataset: ds.Dataset, keys: list[str], where: pc.Expression) -> pa.Table:
    """How many rows matching `where` each combination of `keys` has (column `count_all`), by Acero's
    streaming hash aggregation over a scan of those columns: memory grows with the number of groups,
    not of rows."""
    scan = acero.ScanNodeOptions(dataset, columns=keys, filter=where, **_SCAN)
    return acero.Declaration.from_sequence([
        acero.Declaration("scan", scan), acero.Declaration("filter", acero.FilterNodeOptions(where)),
        acero.Declaration("aggregate", acero.AggregateNodeOptions([([], "hash_count_all", None, "count_all")],
                                                                  keys=keys)),
    ]).to_table()


def _bins(scores: pa.Array | pa.ChunkedArray, bins: int) -> pa.Array:
    """Each score's bin among `bins` equal bins of [0, 1] (1.0 in the last)."""
    return pc.min_element_wise(pc.cast(pc.floor(pc.multiply(scores, bins)), pa.int32()), bins - 1)


def analyse(dataset: ds.Dataset) -> dict:
    """Every figure on the page. Group counts are streamed (`_count_groups`: memory grows with the
    number of classes); the classified rows' scores (4 bytes a row) are read whole for the exact median
    and the histogram. Paths are read only for the rows shown."""
    classified = pc.field(col.ERROR).is_null()
    scores = dataset.to_table(columns=[col.SCORE], filter=classified, **_SCAN)[col.SCORE]
    rows, ok = dataset.count_rows(), len(scores)
    histogram = [0] * SCORE_BINS
    for entry in pc.value_counts(_bins(scores, SCORE_BINS)).to_pylist():
        histogram[entry["values"]] = entry["counts"]
    labels = _count_groups(dataset, [col.LABEL], classified).filter(pc.field(col.LABEL).is_valid())
    stats = {
        "rows": rows, "ok": ok, "errors": rows - ok, "classes_predicted": labels.num_rows,
        "top_classes": _top(labels, [col.LABEL], TOP_CLASSES), "histogram": histogram,
        "low_confidence": pc.sum(pc.less(scores, LOW_CONFIDENCE)).as_py() or 0,
        "median_score": pc.quantile(scores, 0.5)[0].as_py() if ok else None,
        "lowest": _lowest(dataset, pc.max(pc.take(scores, pc.select_k_unstable(
            scores, min(THUMBNAILS, ok), [(col.SCORE, "ascending")]))).as_py()) if ok else [],
    }
    del scores
    kind_columns = [col.ERROR_KIND] if col.ERROR_KIND in dataset.schema.names else []
    failed = dataset.to_table(columns=[col.PATH, col.ERROR, *kind_columns], filter=pc.field(col.ERROR).is_valid(),
                              **_SCAN)
    failed = pa.table({"kind": error_kinds(failed), col.PATH: failed[col.PATH]})
    stats["error_kinds"] = [
        {"kind": group["kind"], "count": group["count_all"],
         "examples": failed.filter(pc.equal(failed["kind"], group["kind"]))[col.PATH][:ERROR_EXAMPLES].to_pylist()}
        for group in _counts(failed.select(["kind"]), ["kind"], TOP_ERROR_KINDS)]
    stats["error_kind_count"] = pc.count_distinct(failed["kind"]).as_py()
    if col.CORRECT in dataset.schema.names:
        stats.update(_accuracy(_count_groups(dataset, [col.TRUE_LABEL, col.LABEL, col.CORRECT],
                                             pc.field(col.CORRECT).is_valid())))
    return stats


def _accuracy(judged: pa.Table) -> dict:
    """Accuracy figures from the judged rows' counts per (true label, label, correct)."""
    hits = pc.if_else(judged[col.CORRECT], judged["count_all"], 0)
    per_class = judged.append_column("hits", hits).group_by(col.TRUE_LABEL).aggregate(
        [("hits", "sum"), ("count_all", "sum")]).rename_columns({"hits_sum": "correct_sum", "count_all_sum": "count_all"})
    wrong = judged.filter(pc.invert(judged[col.CORRECT])).group_by([col.TRUE_LABEL, col.LABEL]).aggregate(
        [("count_all", "sum")]).rename_columns({"count_all_sum": "count_all"})
    return {"judged": pc.sum(judged["count_all"]).as_py() or 0, "correct": pc.sum(hits).as_py() or 0,
            "per_class": _top(per_class, [col.TRUE_LABEL], TRUE_CLASSES),
            "confusions": _top(wrong, [col.TRUE_LABEL, col.LABEL], TOP_CONFUSIONS)}


def _lowest(dataset: ds.Dataset, cutoff: float) -> list[dict]:
    """The THUMBNAILS classified rows with the lowest score (ties by path): a second scan keeps only
    the rows at or below the THUMBNAILS-th lowest score."""
    candidates = dataset.to_table(columns=[col.PATH, col.LABEL, col.SCORE],
                                  filter=pc.field(col.ERROR).is_null() & (pc.field(col.SCORE) <= cutoff), **_SCAN)
    return candidates.sort_by([(col.SCORE, "ascending"), (col.PATH, "ascending")]).slice(0, THUMBNAILS).to_pylist()


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none"}):  # text stays text: smaller, selectable
        figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _figure(height: float = 3.2) -> tuple[Figure, object]:
    figure = Figure(figsize=(7.2, height))
    axes = figure.subplots()
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _whole_counts(axis: Axis) -> None:
    axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


def _barh(names: list[str], values: list[float], color: str, xlabel: str, labels: list[str]) -> str:
    """Horizontal bars, first name on top; `xlabel` "images" means whole counts on the axis."""
    figure, axes = _figure(max(1.6, 0.32 * len(names) + 0.8))
    positions = range(len(names))[::-1]
    bars = axes.barh(list(positions), values, color=color)
    axes.set_yticks(list(positions), [name if len(name) <= 40 else name[:39] + "…" for name in names])
    axes.bar_label(bars, labels, padding=3, fontsize=8)
    axes.set_xlabel(xlabel)
    if xlabel == "images":
        _whole_counts(axes.xaxis)
    axes.margins(x=0.15)
    return _svg(figure)


def chart_top_classes(stats: dict) -> str:
    top = stats["top_classes"]
    return _barh([row[col.LABEL] for row in top], [row["count_all"] for row in top], COLORS["bar"],
                 "images", [f"{row['count_all']:,}" for row in top])


def chart_confidence(stats: dict) -> str:
    figure, axes = _figure()
    edges = [index / SCORE_BINS for index in range(SCORE_BINS)]
    colors = [COLORS["low"] if edge < LOW_CONFIDENCE else COLORS["bar"] for edge in edges]
    axes.bar(edges, stats["histogram"], width=1 / SCORE_BINS, align="edge", color=colors, edgecolor="white")
    axes.axvline(LOW_CONFIDENCE, color=COLORS["line"], linestyle="--", linewidth=1)
    axes.set_xlim(0, 1)
    axes.set_xlabel("top-1 probability")
    axes.set_ylabel("images")
    _whole_counts(axes.yaxis)
    return _svg(figure)


def chart_errors(stats: dict) -> str:
    kinds = stats["error_kinds"]
    return _barh([row["kind"] for row in kinds], [row["count"] for row in kinds], COLORS["error"],
                 "images", [f"{row['count']:,}" for row in kinds])


def throughput_points(summary: dict) -> list[tuple[float, int]]:
    """(seconds since the job started, images written by then), one point per distinct write time of
    the output files (the commit records each staged file's write time; object stores keep whole
    seconds). The first point is (0, images resumed from an earlier attempt's files). Empty when the
    summary records no write times."""
    started = datetime.fromisoformat(summary["started_at"])
    written: dict[float, int] = {}
    for entry in summary["files"]:
        if entry.get("written_at"):
            seconds = max(0.0, (datetime.fromisoformat(entry["written_at"]) - started).total_seconds())
            written[seconds] = written.get(seconds, 0) + entry["rows"]
    points, total = [], 0
    for seconds in sorted(written):
        total += written[seconds]
        points.append((seconds, total))
    return points if not points or points[0][0] == 0 else [(0.0, 0), *points]


def chart_throughput(summary: dict, points: list[tuple[float, int]]) -> str:
    """Images written over the run (top) and the rate between consecutive writes (bottom)."""
    figure = Figure(figsize=(7.2, 4.2))
    done, rate = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    startup = summary["startup_s"]
    for axes in (done, rate):
        axes.spines[["top", "right"]].set_visible(False)
        axes.axvline(startup, color=COLORS["line"], linestyle=":", linewidth=1)
    seconds, totals = [point[0] for point in points], [point[1] for point in points]
    done.step(seconds, totals, where="post", color=COLORS["bar"])
    done.plot(seconds[1:], totals[1:], "o", color=COLORS["bar"], markersize=3)
    done.set_ylabel("images written")
    _whole_counts(done.yaxis)
    done.annotate("pipeline starts", (startup, 0), xytext=(4, 4), textcoords="offset points", fontsize=8,
                  color=COLORS["line"])
    starts = [max(seconds[0], startup), *seconds[1:-1]]  # nothing is written during start-up
    widths = [max(end - begin, 1.0) for begin, end in zip(starts, seconds[1:])]
    rate.bar(starts, [(after - before) / width for before, after, width in zip(totals, totals[1:], widths)],
             width=widths, align="edge", color=COLORS["ok"], edgecolor="white")
    rate.set_ylabel("images/s")
    rate.set_xlabel("seconds since the job started")
    return _svg(figure)


def chart_accuracy(stats: dict) -> str:
    per_class = stats["per_class"]
    values = [row["correct_sum"] / row["count_all"] for row in per_class]
    return _barh([row[col.TRUE_LABEL] for row in per_class], values, COLORS["ok"], "accuracy",
                 [f"{value:.0%} of {row['count_all']:,}" for value, row in zip(values, per_class)])


def _thumbnail(data: bytes | Exception) -> str | None:
    """A small JPEG data URI of an input image, or None when it cannot be read or decoded."""
    if isinstance(data, Exception):
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (THUMBNAIL_PX * 2, THUMBNAIL_PX * 2))  # JPEG: decode at reduced size
            small = ImageOps.exif_transpose(image).convert("RGB")
            small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def thumbnails(output: Output, summary: dict, rows: list[dict]) -> list[str | None]:
    """Thumbnails of `rows` read from the run's input (same storage settings as the output)."""
    if not rows:
        return []
    source = resolve(summary["input"], output.s3)
    paths = [f"{urlparse(row[col.PATH]).netloc}{urlparse(row[col.PATH]).path}" if source.scheme == "s3"
             else urlparse(row[col.PATH]).path for row in rows]
    try:
        found = read_many(source.filesystem, paths, THUMBNAIL_READ_TIMEOUT_S)
    except StorageUnavailable:  # the results are committed already: a page without pictures, not a failed job
        return [None] * len(rows)
    return [_thumbnail(data) for data in found]


def _e(value: object) -> str:
    return html.escape(str(value))


def _stat(name: str, key: str, value: object, text: str) -> str:
    return f'<div class="stat"><dt>{_e(name)}</dt><dd data-stat="{key}" data-value="{_e(value)}">{_e(text)}</dd></div>'


def _section(title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f"<section><h2>{_e(title)}</h2>{note_html}{body}</section>"


def build_report(output: Output, summary: dict) -> str:
    """The whole page as one string."""
    stats = analyse(predictions(output, summary))
    share = stats["low_confidence"] / stats["ok"] if stats["ok"] else 0.0
    accuracy = stats["correct"] / stats["judged"] if stats.get("judged") else None
    figures = [
        _stat("images", "rows", stats["rows"], f"{stats['rows']:,}"),
        _stat("classified", "ok", stats["ok"], f"{stats['ok']:,}"),
        _stat("errors", "errors", stats["errors"], f"{stats['errors']:,}"),
        _stat("accuracy", "accuracy", accuracy, "n/a" if accuracy is None else f"{accuracy:.1%}"),
        _stat(f"low confidence (< {LOW_CONFIDENCE:g})", "low_confidence", stats["low_confidence"],
              f"{share:.1%}"),
        _stat("images/s", "images_per_s", summary.get("images_per_s"), str(summary.get("images_per_s") or "n/a")),
    ]
    details = [("model", summary.get("model")), ("weights", summary.get("weights")), ("device", summary.get("device")),
               ("input", summary.get("input")), ("output", summary.get("output")),
               ("started", summary.get("started_at")), ("finished", summary.get("finished_at")),
               ("start-up s", summary.get("startup_s")), ("pipeline s", summary.get("pipeline_s")),
               ("skipped (not images)", summary.get("skipped_non_images")),
               ("resumed from an earlier run", summary.get("resumed_rows")), ("files", len(summary["files"]))]
    sections = [
        _section("Top classes", chart_top_classes(stats) if stats["top_classes"] else "<p>No image was classified.</p>",
                 f"{stats['classes_predicted']:,} distinct top-1 classes; the {len(stats['top_classes'])} most frequent."),
        _section("Confidence", chart_confidence(stats) if stats["ok"] else "<p>No image was classified.</p>",
                 f"Top-1 probability of the classified images. <b>{share:.1%}</b> ({stats['low_confidence']:,}) "
                 f"are below {LOW_CONFIDENCE:g} (orange, left of the dashed line): low-confidence predictions"
                 + (f"; median {stats['median_score']:.3f}." if stats["median_score"] is not None else ".")),
        _errors_section(stats),
        _throughput_section(summary),
    ]
    if accuracy is not None:
        sections.append(_accuracy_section(stats, accuracy))
    sections.append(_lowest_section(stats, thumbnails(output, summary, stats["lowest"])))
    title = f"batchinfer report: {summary.get('output', output.location.uri())}"
    return PAGE.format(title=_e(title), figures="".join(figures), sections="".join(sections),
                       details="".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in details))


def _errors_section(stats: dict) -> str:
    if not stats["errors"]:
        return _section("Errors", "<p>No errors.</p>")
    rows = "".join(
        f'<tr data-kind="{_e(row["kind"])}" data-count="{row["count"]}"><td>{_e(row["kind"])}</td>'
        f'<td class="num">{row["count"]:,}</td><td>{"<br>".join(_e(path) for path in row["examples"])}</td></tr>'
        for row in stats["error_kinds"])
    shown = len(stats["error_kinds"])
    note = (f"{stats['errors']:,} images could not be classified, in {stats['error_kind_count']} kinds"
            + (f" (the {shown} most frequent shown)" if shown < stats["error_kind_count"] else "") + ".")
    table = f"<table><tr><th>kind</th><th>images</th><th>examples</th></tr>{rows}</table>"
    return _section("Errors", chart_errors(stats) + table, note)


def _throughput_section(summary: dict) -> str:
    points = throughput_points(summary)
    if not points:
        return _section("Throughput", "<p>This run's summary records no per-file write times.</p>")
    note = (f"Images written to storage over the run, from the write times of the output files; "
            f"the dotted line is where the pipeline started after {summary['startup_s']:g} s of start-up. "
            f"Overall: {summary.get('images_per_s') or 'n/a'} images/s over {summary['pipeline_s']:g} s.")
    return _section("Throughput", chart_throughput(summary, points), note)


def _accuracy_section(stats: dict, accuracy: float) -> str:
    confusions = "".join(
        f"<tr><td>{_e(row[col.TRUE_LABEL])}</td><td>{_e(row[col.LABEL])}</td><td class='num'>{row['count_all']:,}</td></tr>"
        for row in stats["confusions"])
    body = chart_accuracy(stats) + (
        "<h3>Most frequent confusions</h3><table><tr><th>true class</th><th>predicted</th><th>images</th></tr>"
        f"{confusions}</table>" if confusions else "<p>No confusion: every judged image is correct.</p>")
    note = (f"Ground truth from --label-from-path: {stats['correct']:,} of {stats['judged']:,} judged images "
            f"correct ({accuracy:.1%}); accuracy of the {len(stats['per_class'])} most frequent true classes.")
    return _section("Accuracy per class", body, note)


def _card(row: dict, uri: str | None) -> str:
    image = f'<img src="{uri}" alt="{_e(row[col.LABEL])}">' if uri else '<div class="missing">not readable</div>'
    caption = f'{_e(row[col.LABEL])} ({row[col.SCORE]:.3f})<br><small>{_e(row[col.PATH])}</small>'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _lowest_section(stats: dict, images: list[str | None]) -> str:
    if not stats["lowest"]:
        return _section("Lowest confidence", "<p>No image was classified.</p>")
    cards = "".join(_card(row, uri) for row, uri in zip(stats["lowest"], images))
    return _section("Lowest confidence", f'<div class="thumbs">{cards}</div>',
                    f"The {len(stats['lowest'])} classified images with the lowest top-1 probability.")


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 16px 24px; color: #222; }}
h1 {{ font-size: 20px; margin: 8px 0 16px; }} h2 {{ font-size: 17px; margin: 0 0 6px; }} h3 {{ font-size: 15px; }}
dl {{ display: flex; flex-wrap: wrap; gap: 12px; margin: 0 0 16px; }}
.stat {{ background: #f3f5f8; border-radius: 6px; padding: 8px 14px; min-width: 120px; }}
dt {{ font-size: 12px; color: #555; }} dd {{ font-size: 22px; font-weight: 600; margin: 0; }}
section {{ border-top: 1px solid #ddd; padding: 14px 0; }}
.note {{ color: #444; margin: 0 0 8px; }}
svg {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin: 6px 0; }}
th, td {{ text-align: left; padding: 3px 10px 3px 0; vertical-align: top; border-bottom: 1px solid #eee; }}
td.num {{ text-align: right; }} details th {{ font-weight: normal; color: #555; }}
.thumbs {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; width: 170px; }} figure img, .missing {{ width: 160px; height: 160px; object-fit: contain;
  background: #f3f5f8; display: flex; align-items: center; justify-content: center; color: #888; }}
figcaption {{ font-size: 12px; word-break: break-all; }}
</style></head>
<body>
<h1>{title}</h1>
<dl>{figures}</dl>
{sections}
<section><details><summary>Run details</summary><table>{details}</table></details></section>
</body></html>
"""
