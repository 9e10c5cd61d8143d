"""The columns that pass between the stages, named once: listing → decode (preprocess) → inference
(predictor) → Parquet (staging, commit), and the commit's check tables. `prediction_schema` is the
output contract."""

from __future__ import annotations

import pyarrow as pa

# Listing → decode → inference → output: the object's URI (the decode stage adds the scheme/bucket).
PATH = "path"
# Decode → inference: why a row is an error row (null when it can still be classified).
ERROR = "error"            # one line saying what is wrong
ERROR_KIND = "error_kind"  # preprocess.ERROR_KINDS
TRUE_LABEL = "true_label"  # from --label-from-path; absent without it
# Decode → inference: the image, either decoded on the CPU ...
IMAGE = "image"            # uint8 H×W×3 crop
# ... or, with GPU decode, a JPEG's bytes for the GPU, or (not a JPEG) the CPU-decoded crop's bytes.
JPEG = "jpeg"
ORIENTATION = "orientation"  # the JPEG's EXIF orientation
PIXELS = "pixels"
# Inference → output.
LABEL = "label"
LABEL_INDEX = "label_index"
SCORE = "score"
TOPK_LABELS = "topk_labels"
TOPK_SCORES = "topk_scores"
MODEL = "model"
CORRECT = "correct"        # label == true_label (normalized); with TRUE_LABEL only
# Listing → output: a manifest's --key-column, carried through so results join back.
KEY = "key"
# Commit checks (commit.py, commit_tasks.py): each staged row's file ("" for an input of a resumed
# run), and the problem rows a bucket check finds (commit.PROBLEMS_SCHEMA).
FILE = "file"
PROBLEM = "kind"           # duplicate, foreign or missing
PROBLEM_ROWS = "rows"      # how many rows of `path` in `file` it concerns


def prediction_schema(with_truth: bool = False, with_key: bool = False) -> pa.Schema:
    """The output contract: one row per input object (`key`: a manifest's --key-column, to join back)."""
    fields = [
        pa.field(PATH, pa.string(), nullable=False),
        pa.field(LABEL, pa.string()),
        pa.field(LABEL_INDEX, pa.int32()),
        pa.field(SCORE, pa.float32()),
        pa.field(TOPK_LABELS, pa.list_(pa.string())),
        pa.field(TOPK_SCORES, pa.list_(pa.float32())),
        pa.field(MODEL, pa.string()),
        pa.field(ERROR, pa.string()),
        pa.field(ERROR_KIND, pa.string()),  # null when classified
    ]
    if with_truth:
        fields += [pa.field(TRUE_LABEL, pa.string()), pa.field(CORRECT, pa.bool_())]
    if with_key:
        fields.append(pa.field(KEY, pa.string()))
    return pa.schema(fields)
