"""Typed, validated job configuration, built from CLI flags and the standard AWS environment."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
GPU_DECODE_MODES = ("auto", "on", "off")
DEFAULT_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # Pillow's decompression-bomb limit (89,478,485)


class UserError(Exception):
    """A mistake the user can fix. The CLI prints it as one line and exits with status 2."""


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
class S3Options:
    """How to reach S3-compatible storage. Secrets are kept out of repr() so they never reach logs."""

    endpoint: str | None = None
    region: str | None = None
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

    input_uri: str
    output_uri: str
    model: str = "resnet50"
    weights: str = "default"
    categories: str | None = None
    batch_size: int | None = None  # None: chosen per device (predictor.default_batch_size)
    device: str = "auto"
    num_workers: tuple[int, int] | None = None  # (min, max) inference actors; None: sized from the cluster
    num_gpus_per_worker: float = 1.0
    num_cpus_per_worker: float | None = None
    top_k: int = 5
    label_from_path: str | None = None
    limit: int | None = None
    path_column: str | None = None  # manifest input: the column of object URIs
    key_column: str | None = None   # manifest input: a column carried into the output as `key`
    rows_per_file: int = 10_000
    overwrite: bool = False
    resume: bool = False
    precision: str = "auto"
    gpu_decode: str = "auto"
    compile: bool = False
    storage_timeout_s: float = 180.0
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    wait_for_lease_s: float = 0.0
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
