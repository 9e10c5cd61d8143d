"""The report's figures (report.analyse) from a small local Parquet output: counts, the confidence
histogram, lowest-confidence rows, error kinds and accuracy. The whole page from a real run:
tests/test_report.py."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from batchinfer.report import (LOW_CONFIDENCE, SCORE_BINS, THUMBNAILS, TOP_CLASSES, TRUE_CLASSES, analyse,
                               error_kinds)

ROWS = [  # path, label, score, error, error_kind, true_label
    ("in/cat/1.jpg", "tabby", 0.97, None, None, "tabby"),
    ("in/cat/2.jpg", "tabby", 0.42, None, None, "tabby"),
    ("in/cat/3.jpg", "tiger cat", 0.30, None, None, "tabby"),
    ("in/cup/1.jpg", "espresso", 1.0, None, None, "espresso"),
    ("in/cup/2.jpg", "espresso", 0.75, None, None, "espresso"),
    ("in/cup/3.jpg", None, None, "cannot identify image file 'in/cup/3.jpg'", "not_an_image", "espresso"),
    ("in/cup/4.jpg", None, None, "image file is truncated (12 bytes not processed)", "truncated", "espresso"),
    ("in/cup/5.jpg", None, None, "cannot identify image file 'in/cup/5.jpg'", "not_an_image", "espresso"),
]


@pytest.fixture
def output(tmp_path) -> ds.Dataset:
    """Two part files, as a committed run leaves them."""
    path, label, score, error, kind, truth = (list(column) for column in zip(*ROWS))
    table = pa.table({"path": path, "label": label, "score": pa.array(score, pa.float32()), "error": error,
                      "error_kind": kind, "true_label": truth,
                      "correct": [None if lab is None else lab == true for lab, true in zip(label, truth)]})
    pq.write_table(table.slice(0, 4), tmp_path / "part-00000.parquet")
    pq.write_table(table.slice(4), tmp_path / "part-00001.parquet")
    return ds.dataset(tmp_path, format="parquet")


def test_counts_and_classes(output) -> None:
    stats = analyse(output)
    assert (stats["rows"], stats["ok"], stats["errors"], stats["classes_predicted"]) == (8, 5, 3, 3)
    assert stats["top_classes"] == [{"label": "espresso", "count_all": 2}, {"label": "tabby", "count_all": 2},
                                    {"label": "tiger cat", "count_all": 1}]


def test_confidence_histogram_and_lowest_rows(output) -> None:
    stats = analyse(output)
    assert len(stats["histogram"]) == SCORE_BINS and sum(stats["histogram"]) == 5
    assert stats["histogram"][-1] == 2  # 0.97 and a score of exactly 1.0 share the top bin
    assert stats["low_confidence"] == sum(1 for row in ROWS if row[2] is not None and row[2] < LOW_CONFIDENCE)
    assert stats["median_score"] == pytest.approx(0.75)
    assert [row["path"] for row in stats["lowest"]] == ["in/cat/3.jpg", "in/cat/2.jpg", "in/cup/2.jpg",
                                                        "in/cat/1.jpg", "in/cup/1.jpg"]


def test_error_kinds_with_examples(output) -> None:
    stats = analyse(output)
    assert stats["error_kind_count"] == 2
    assert stats["error_kinds"] == [
        {"kind": "not_an_image", "count": 2, "examples": ["in/cup/3.jpg", "in/cup/5.jpg"]},
        {"kind": "truncated", "count": 1, "examples": ["in/cup/4.jpg"]}]


def test_accuracy_per_class_and_confusions(output) -> None:
    stats = analyse(output)
    assert (stats["judged"], stats["correct"]) == (5, 4)
    assert stats["per_class"] == [{"true_label": "tabby", "correct_sum": 2, "count_all": 3},
                                  {"true_label": "espresso", "correct_sum": 2, "count_all": 2}]
    assert stats["confusions"] == [{"true_label": "tabby", "label": "tiger cat", "count_all": 1}]


def test_outputs_without_error_kind_group_messages_by_cause() -> None:
    """Older outputs have no error_kind column: messages are grouped with what varies blanked out."""
    table = pa.table({"error": ["cannot read s3://b/in/a.jpg: 'a.jpg' 404", "cannot read s3://b/x.jpg: 'x.jpg' 500"]})
    assert error_kinds(table).to_pylist() == ["cannot read <uri> '…' N"] * 2


@pytest.mark.parametrize("rows", [4001, 4000])  # an odd and an even count of classified rows
def test_streamed_figures_equal_whole_table_figures(tmp_path, rows) -> None:
    """analyse() aggregates batch by batch; over many files and batches (with ties and scores in
    one narrow range) its figures equal those computed over the whole table at once, the median exactly."""
    rng = np.random.default_rng(rows)
    labels = [f"class-{index}" for index in rng.integers(0, 30, rows)]
    truths = [f"class-{index}" for index in rng.integers(0, 30, rows)]
    scores = np.concatenate([rng.random(rows // 2), 0.5 + rng.random(rows - rows // 2) / 1e6]).astype(np.float32)
    table = pa.table({"path": [f"in/{index:05d}.jpg" for index in range(rows)], "label": labels,
                      "score": scores, "error": pa.nulls(rows, pa.string()), "true_label": truths,
                      "correct": [label == truth for label, truth in zip(labels, truths)]})
    for part, start in enumerate(range(0, rows, 700)):
        pq.write_table(table.slice(start, 700), tmp_path / f"part-{part:05d}.parquet", row_group_size=128)
    stats = analyse(ds.dataset(tmp_path, format="parquet"))

    assert stats["median_score"] == pc.quantile(table["score"], 0.5)[0].as_py()
    whole = table.group_by("label").aggregate([([], "count_all")]).sort_by(
        [("count_all", "descending"), ("label", "ascending")]).slice(0, TOP_CLASSES).to_pylist()
    assert stats["top_classes"] == whole and stats["classes_predicted"] == 30
    per_class = table.group_by("true_label").aggregate([("correct", "sum"), ([], "count_all")]).sort_by(
        [("count_all", "descending"), ("true_label", "ascending")]).slice(0, TRUE_CLASSES).to_pylist()
    assert stats["per_class"] == per_class
    assert stats["correct"] == sum(table["correct"].to_pylist()) and stats["judged"] == rows
    lowest = table.sort_by([("score", "ascending"), ("path", "ascending")]).slice(0, THUMBNAILS)
    assert [row["path"] for row in stats["lowest"]] == lowest["path"].to_pylist()
