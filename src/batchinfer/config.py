"""Typed, validated job configuration, built from CLI flags and the standard AWS environment.

Each setting is defined once, here: its field, default and `flag()` metadata (flag name, help, how
to parse it, choices, group). The CLI (cli.build_parser) and docs/cli.md (python -m tests.cli_doc) are
generated from them, so a new flag is one field here (plus its range check in `validate()`), the
regenerated docs/cli.md and, when the chart should set it, a `job.` chart value of the same name (else
`job.extraArgs`); docs/development.md "Adding a flag" lists the steps.
"""

from __future__ import annotations

import os
import re
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Callable, Mapping

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
GPU_DECODE_MODES = ("auto", "on", "off")
DEFAULT_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # Pillow's decompression-bomb limit (89,478,485)


class UserError(Exception):
    """A mistake the user can fix. The CLI prints it as one line and exits with status 2."""


class Stalled(Exception):
    """The pipeline made no progress for --stall-timeout (stalls.py). The CLI prints it as one line and
    exits with status 1."""


def positive_int(text: str) -> int:
    """A whole number of at least 1. Raises ValueError saying what is wrong."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """A number greater than 0. Raises ValueError saying what is wrong."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {text}")
    return value


def number(text: str) -> float:
    """Any number (validate() checks its range). Raises ValueError saying what is wrong."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def parse_worker_range(text: str) -> tuple[int, int]:
    """--num-workers: `N` (a fixed pool of N inference actors) or `MIN-MAX` (Ray Data scales the pool
    between them) as (min, max). Raises ValueError saying what is wrong."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not match:
        raise ValueError(f"expected N or MIN-MAX (e.g. 4 or 1-8), got {text!r}")
    low = int(match[1])
    high = int(match[2]) if match[2] is not None else low
    if not 1 <= low <= high:
        raise ValueError(f"expected 1 <= MIN <= MAX, got {text!r}")
    return low, high


@dataclass(frozen=True)
class Flag:
    """How a configuration field appears on the command line. The help never repeats the default:
    `batchinfer run --help` and docs/cli.md add it from the field."""

    name: str                                   # e.g. "--rows-per-file"
    help: str
    group: str                                  # the section of `batchinfer run --help` and docs/cli.md
    parse: Callable[[str], Any] | None = None   # text → value, raising ValueError; None: the text itself
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    required: bool = False                      # no default: the flag must be given


IO, MODEL, COMPUTE, STORAGE = ("input and output", "model", "compute",
                               "storage (overrides the AWS_* environment)")


def flag(name: str, help: str, group: str, default: Any = MISSING, **options: Any) -> Any:
    """A dataclass field with a default (none: a required flag) that is also a command-line flag."""
    spec = Flag(name, help, group, required=default is MISSING, **options)
    return field(default=default, metadata={"flag": spec})


def flag_fields(cls: type) -> list[tuple[Field, Flag]]:
    """The fields of a configuration dataclass that are flags, in definition order."""
    return [(f, f.metadata["flag"]) for f in fields(cls) if "flag" in f.metadata]


@dataclass(frozen=True)
class S3Options:
    """How to reach S3-compatible storage. Secrets are kept out of repr() so they never reach logs."""

    endpoint: str | None = flag("--s3-endpoint", "S3 endpoint URL, e.g. http://seaweedfs:8333 (instead of "
                                 "AWS_ENDPOINT_URL)", STORAGE, None,
                                 metavar="URL")
    region: str | None = flag("--s3-region", "S3 region (instead of AWS_REGION)", STORAGE, None,
                              metavar="REGION")
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, endpoint: str | None = None,
                 region: str | None = None) -> "S3Options":
        """Read AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL, AWS_REGION/AWS_DEFAULT_REGION and the key pair;
        explicit flags win over the environment."""
        return cls(
            endpoint=endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            region=region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )


@dataclass(frozen=True)
class JobConfig:
    """Everything one run needs. `validate()` turns bad values into a UserError before any work."""

    input_uri: str = flag(
        "--input", "s3://BUCKET/PREFIX/ or a local directory (file:// or a path): every image under it, "
        "recursively (.jpg .jpeg .png .webp .bmp .gif .tif .tiff, any case; other objects are skipped and "
        "counted), listed by parallel Ray tasks as the job runs; or a manifest: a .parquet/.csv file with a "
        "column of object URIs, a .txt file with one per line, or an S3 Inventory manifest.json", IO,
        metavar="URI")
    output_uri: str = flag(
        "--output", "s3://BUCKET/PREFIX/ or a local directory, not inside the input and not a bucket root: "
        "Parquet part files and _SUCCESS; the run's summary and report go to <output>.batchinfer/",
        IO, metavar="URI")
    limit: int | None = flag("--limit", "classify only N images (any N of them: the listing runs in "
                             "parallel; it stops early)", IO, None, parse=positive_int, metavar="N")
    path_column: str | None = flag("--path-column", "manifest input: the column of object URIs (default: "
                                   "`path`, or the only column)", IO, None, metavar="NAME")
    key_column: str | None = flag("--key-column", "manifest input: a column copied into the output as "
                                  "`key`, to join results back", IO, None, metavar="NAME")
    label_from_path: str | None = flag(
        "--label-from-path", "ground truth from the object path (the first group, or the whole match), "
        "e.g. '([^/]+)/[^/]+$' for the parent directory; adds true_label, correct and the accuracy",
        IO, None, metavar="REGEX")
    rows_per_file: int = flag(
        "--rows-per-file", "at most this many rows per Parquet file (each write gathers this many rows); "
        "also the unit of --resume", IO, 10_000, parse=positive_int, metavar="N")
    max_image_pixels: int = flag(
        "--max-image-pixels", "an image that would decode to more than N pixels becomes an error row "
        "(too_large), never decoded; JPEGs count at the reduced size they are decoded at, other formats "
        "at full size. The default is Pillow's decompression-bomb limit", IO, DEFAULT_MAX_IMAGE_PIXELS,
        parse=positive_int, metavar="N")
    overwrite: bool = flag("--overwrite", "replace an output that already holds a finished run", IO, False)
    resume: bool = flag("--resume", "keep what an interrupted run of the same job finished and classify "
                        "only the rest; a no-op on a finished output", IO, False)
    wait_for_lease_s: float = flag(
        "--wait-for-lease", "when another run is writing the same --output, wait up to this long for it to "
        "end (0: exit 2 at once, naming that run)", IO, 0.0, parse=number, metavar="SECONDS")

    model: str = flag("--model", "a torchvision model name (resnet50, efficientnet_b0, vit_b_16, …), "
                      "timm:<name> (needs batchinfer[timm]), or a TorchScript (.pt) / ExportedProgram "
                      "(.pt2) file URI", MODEL, "resnet50")
    weights: str = flag("--weights", "'default': the model's pretrained weights (downloaded; needs "
                        "internet), 'none', or a state_dict URI (s3://…, a file)", MODEL, "default")
    categories: str | None = flag(
        "--categories", "class names, one per line, in output order (otherwise the weights' names, or "
        "ImageNet-1k for 1000 outputs)", MODEL, None, metavar="URI")
    top_k: int = flag("--top-k", "classes per row (1 to 1000)", MODEL, 5, parse=positive_int, metavar="K")

    device: str = flag("--device", "auto: CUDA when the cluster has GPUs now, else CPU; cuda: GPU actors, "
                       "waiting for the autoscaler to add GPU nodes when there are none yet", COMPUTE, "auto",
                       choices=DEVICES)
    batch_size: int | None = flag(  # None: chosen per device (predictor.default_batch_size)
        "--batch-size", "images per forward pass (default: 16 on CPU; on CUDA by GPU memory, 512 on 70+ "
        "GiB, 256 on 30+, 128 on 14+, else 64)", COMPUTE, None, parse=positive_int, metavar="N")
    num_workers: tuple[int, int] | None = flag(  # (min, max) inference actors; None: sized from the cluster
        "--num-workers", "inference actors: N (fixed) or MIN-MAX (Ray Data scales the pool; its pending "
        "actors make the Ray autoscaler add nodes). Default: one per GPU present, else one CPU actor",
        COMPUTE, None, parse=parse_worker_range, metavar="N|MIN-MAX")
    num_gpus_per_worker: float = flag("--num-gpus-per-worker", "GPUs per inference actor on CUDA "
                                      "(fractions share a GPU)", COMPUTE, 1.0, parse=positive_float, metavar="N")
    num_cpus_per_worker: float | None = flag(
        "--num-cpus-per-worker", "CPUs per inference actor; torch threads follow (default: 1 on GPU; on CPU "
        "the node's cores minus room for decoding)", COMPUTE, None, parse=positive_float, metavar="N")
    precision: str = flag("--precision", "auto: bf16 autocast on CUDA (fp16 without bf16), fp32 on CPU",
                          COMPUTE, "auto", choices=PRECISIONS)
    gpu_decode: str = flag("--gpu-decode", "decode JPEGs on the GPU with nvjpeg (auto: when the device is "
                           "CUDA)", COMPUTE, "auto", choices=GPU_DECODE_MODES)
    compile: bool = flag("--compile", "torch.compile the model", COMPUTE, False)
    node_wait_s: float = flag(
        "--node-wait", "on a Ray cluster that has no GPU (or, with --device cpu, no worker CPU) yet, how "
        "long to wait for its autoscaler to add a node before failing; a GPU node from zero can take "
        "many minutes", COMPUTE, 600.0, parse=positive_float, metavar="SECONDS")
    stall_timeout_s: float = flag(
        "--stall-timeout", "end the run (exit 1, one line naming the stuck stage and what it waits for) when "
        "no stage made progress for this long; it must cover a model's first load on a GPU node",
        COMPUTE, 600.0, parse=positive_float, metavar="SECONDS")

    storage_timeout_s: float = flag(
        "--storage-timeout", "how long the object store may stay unreachable (counted from a call's first "
        "failed request) before the job fails with nothing committed: the one retry budget of every "
        "storage call (docs/reliability.md)", STORAGE, 180.0, parse=positive_float,
        metavar="SECONDS")
    s3: S3Options = field(default_factory=S3Options)

    def validate(self) -> "JobConfig":
        checks = [
            (self.batch_size is None or self.batch_size >= 1,
             f"--batch-size must be at least 1 (got {self.batch_size})"),
            (1 <= self.top_k <= 1000, f"--top-k must be between 1 and 1000 (got {self.top_k})"),
            (self.limit is None or self.limit >= 1, f"--limit must be at least 1 (got {self.limit})"),
            (self.rows_per_file >= 1, f"--rows-per-file must be at least 1 (got {self.rows_per_file})"),
            (self.num_workers is None or 1 <= self.num_workers[0] <= self.num_workers[1],
             f"--num-workers must be N or MIN-MAX with 1 <= MIN <= MAX (got {self.num_workers})"),
            (self.num_gpus_per_worker > 0,
             f"--num-gpus-per-worker must be greater than 0 (got {self.num_gpus_per_worker})"),
            (self.num_cpus_per_worker is None or self.num_cpus_per_worker > 0,
             f"--num-cpus-per-worker must be greater than 0 (got {self.num_cpus_per_worker})"),
            (self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)} (got {self.device!r})"),
            (self.precision in PRECISIONS,
             f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})"),
            (self.gpu_decode in GPU_DECODE_MODES,
             f"--gpu-decode must be one of {', '.join(GPU_DECODE_MODES)} (got {self.gpu_decode!r})"),
            (not (self.resume and self.overwrite),
             "--resume and --overwrite contradict each other: pick one"),
            (bool(self.weights), "--weights must be 'default', 'none' or a checkpoint URI"),
            (self.storage_timeout_s > 0,
             f"--storage-timeout must be greater than 0 seconds (got {self.storage_timeout_s:g})"),
            (self.max_image_pixels >= 1,
             f"--max-image-pixels must be at least 1 (got {self.max_image_pixels})"),
            (self.node_wait_s > 0, f"--node-wait must be greater than 0 seconds (got {self.node_wait_s:g})"),
            (self.stall_timeout_s > 0,
             f"--stall-timeout must be greater than 0 seconds (got {self.stall_timeout_s:g})"),
            (self.wait_for_lease_s >= 0,
             f"--wait-for-lease must be 0 or more seconds (got {self.wait_for_lease_s:g})"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.label_from_path is not None:
            try:
                re.compile(self.label_from_path)
            except re.error as exc:
                raise UserError(f"--label-from-path is not a valid regular expression ({exc}); "
                                r"example: '([^/]+)/[^/]+$' takes the parent directory") from None
        return self
