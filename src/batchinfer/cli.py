"""`batchinfer` command line: flags → JobConfig, user mistakes → one line and exit status 2."""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from typing import NoReturn, Sequence

from batchinfer.config import (DEFAULT_MAX_IMAGE_PIXELS, DEVICES, GPU_DECODE_MODES, PRECISIONS, JobConfig,
                               S3Options, UserError, parse_worker_range)
from batchinfer.lease import LeaseLost

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line that names the problem and where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _worker_range(text: str) -> tuple[int, int]:
    try:
        return parse_worker_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_positive_int.__name__ = "positive integer"
_positive_float.__name__ = "positive number"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="batchinfer", description="Batch image classification on Ray Data: "
                           "images in object storage → PyTorch model → Parquet predictions.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    run = commands.add_parser("run", help="classify every image under a prefix",
                              description="Classify every image under --input and write Parquet to --output. "
                              "S3 access comes from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                              "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION.")
    io_group = run.add_argument_group("input and output")
    io_group.add_argument("--input", required=True,
                          help="s3://BUCKET/PREFIX/ or a local directory (every image under it); or a manifest: "
                          "a .parquet/.csv file with a column of object URIs, a .txt file with one per line, "
                          "or an S3 Inventory manifest.json")
    io_group.add_argument("--output", required=True, help="s3://BUCKET/PREFIX/ or a local directory")
    io_group.add_argument("--path-column", metavar="NAME",
                          help="manifest input: the column of object URIs (default: `path`, or the only column)")
    io_group.add_argument("--key-column", metavar="NAME",
                          help="manifest input: a column copied into the output as `key`, to join results back")
    io_group.add_argument("--limit", type=_positive_int,
                          help="classify only N images (any N of them: the listing runs in parallel)")
    io_group.add_argument("--label-from-path", metavar="REGEX",
                          help="ground truth from the object path (first group), e.g. '([^/]+)/[^/]+$'")
    io_group.add_argument("--rows-per-file", type=_positive_int, default=10_000,
                          help="at most this many rows per Parquet file; also the unit of --resume "
                          "(default 10000)")
    io_group.add_argument("--max-image-pixels", type=_positive_int, default=DEFAULT_MAX_IMAGE_PIXELS,
                          metavar="N", help="an image that would decode to more than N pixels becomes an "
                          "error row (decompression-bomb guard; JPEGs count at the reduced size they are "
                          f"decoded at; default {DEFAULT_MAX_IMAGE_PIXELS}, Pillow's limit)")
    io_group.add_argument("--overwrite", action="store_true", help="replace a finished output")
    io_group.add_argument("--resume", action="store_true",
                          help="keep results of an interrupted run and classify only the rest")
    io_group.add_argument("--wait-for-lease", type=float, default=0.0, metavar="SECONDS",
                          help="when another run writes --output, wait up to this long for it to finish "
                          "(default 0: exit 2 at once, naming that run)")

    model = run.add_argument_group("model")
    model.add_argument("--model", default="resnet50",
                       help="torchvision name (resnet50, efficientnet_b0, …), timm:<name>, or a "
                       "TorchScript/.pt2 file URI (default resnet50)")
    model.add_argument("--weights", default="default",
                       help="'default' (pretrained; needs internet), 'none', or a state_dict URI")
    model.add_argument("--categories", metavar="URI", help="class names, one per line, in output order")
    model.add_argument("--top-k", type=_positive_int, default=5, help="classes per row (default 5)")

    compute = run.add_argument_group("compute")
    compute.add_argument("--device", choices=DEVICES, default="auto",
                         help="auto: CUDA when the cluster has GPUs now, else CPU; cuda: GPU actors, "
                         "waiting for the autoscaler to add GPU nodes when there are none yet")
    compute.add_argument("--batch-size", type=_positive_int,
                         help="images per forward pass (default: 16 on CPU; on CUDA by GPU memory, "
                         "512 on 70+ GiB, 256 on 30+, 128 on 14+, else 64)")
    compute.add_argument("--num-workers", type=_worker_range, metavar="N|MIN-MAX",
                         help="inference actors: N (fixed) or MIN-MAX (Ray Data scales the pool; its "
                         "pending actors make the Ray autoscaler add nodes). Default: one per GPU "
                         "present, else one CPU actor")
    compute.add_argument("--num-gpus-per-worker", type=_positive_float, default=1.0)
    compute.add_argument("--num-cpus-per-worker", type=_positive_float,
                         help="CPUs per inference actor (default: 1 on GPU; on CPU the node's cores "
                         "minus room for decoding)")
    compute.add_argument("--precision", choices=PRECISIONS, default="auto",
                         help="auto: bf16 autocast on CUDA (fp16 without bf16), fp32 on CPU")
    compute.add_argument("--gpu-decode", choices=GPU_DECODE_MODES, default="auto",
                         help="decode JPEGs on the GPU (auto: on when the device is CUDA)")
    compute.add_argument("--compile", action="store_true", help="torch.compile the model")

    storage = run.add_argument_group("storage (overrides the AWS_* environment)")
    storage.add_argument("--s3-endpoint", help="S3 endpoint URL, e.g. http://seaweedfs:8333")
    storage.add_argument("--s3-region", help="S3 region")
    storage.add_argument("--storage-timeout", type=_positive_float, default=180.0, metavar="SECONDS",
                         help="how long storage may stay unreachable mid-run (retried with backoff) "
                         "before the job fails with nothing committed (default 180)")

    commands.add_parser("demo", help="run the job on the embedded default (local S3, sample photos)")

    check = commands.add_parser("check", help="check storage access: list and read the input, write the output",
                                description="List --input and read one image, write and delete a probe "
                                "object under --output, with the same AWS_* environment as `run`.")
    check.add_argument("--input", required=True, help="s3://BUCKET/PREFIX/ or a local directory")
    check.add_argument("--output", required=True, help="s3://BUCKET/PREFIX/ or a local directory")

    report = commands.add_parser("report", help="(re)build the HTML report of a finished output",
                                 description="Build the HTML report of a finished run and write it next to "
                                 "its summary, or to a local file with -o.")
    report.add_argument("output_uri", metavar="OUTPUT_URI", help="the --output of a finished run")
    report.add_argument("-o", "--out", metavar="FILE", help="write the report to this local file instead")
    report.add_argument("--s3-endpoint", help="S3 endpoint URL, e.g. http://seaweedfs:8333")
    report.add_argument("--s3-region", help="S3 region")
    return parser


def config_from_args(args: argparse.Namespace) -> JobConfig:
    return JobConfig(
        input_uri=args.input, output_uri=args.output, model=args.model, weights=args.weights,
        categories=args.categories, batch_size=args.batch_size, device=args.device,
        num_workers=args.num_workers, num_gpus_per_worker=args.num_gpus_per_worker,
        num_cpus_per_worker=args.num_cpus_per_worker, top_k=args.top_k,
        label_from_path=args.label_from_path, limit=args.limit, rows_per_file=args.rows_per_file,
        path_column=args.path_column, key_column=args.key_column,
        overwrite=args.overwrite, resume=args.resume, precision=args.precision,
        gpu_decode=args.gpu_decode, compile=args.compile, storage_timeout_s=args.storage_timeout,
        max_image_pixels=args.max_image_pixels,
        wait_for_lease_s=args.wait_for_lease,
        s3=S3Options.from_env(os.environ, endpoint=args.s3_endpoint, region=args.s3_region),
    ).validate()


def print_summary(summary: dict) -> None:
    """The run's summary as a two-column table."""
    if not summary:
        return
    accuracy = summary.get("accuracy")
    by_kind = ", ".join(f"{kind} {count}" for kind, count in summary.get("errors_by_kind", {}).items())
    errors = f"{summary['errors']} ({by_kind})" if by_kind else summary["errors"]
    rows = [
        ("output", summary["output"]), ("model", summary["model"]), ("device", summary["device"]),
        ("images", summary["rows"]), ("classified", summary["ok"]), ("errors", errors),
        ("skipped (not images)", summary["skipped_non_images"]),
        ("resumed from earlier run", summary["resumed_rows"]),
        ("accuracy", "n/a" if accuracy is None else f"{accuracy:.3f}"),
        ("images/s", summary["images_per_s"] or "n/a"), ("start-up (s)", summary["startup_s"]),
        ("pipeline (s)", summary["pipeline_s"]), ("files", len(summary["files"])),
    ]
    width = max(len(name) for name, _ in rows)
    print("\nbatchinfer summary")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def failure_reason(exc: BaseException) -> str:
    """One line for a failed job: our own error if one is in the chain (Ray wraps a task's error in
    its own types and passes the original only as text), else the innermost cause."""
    ours = re.findall(r"^batchinfer\.\w+\.\w+: (.+)$", "".join(traceback.format_exception(exc)), re.MULTILINE)
    if ours:
        return ours[-1]
    while True:
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException) or inner is exc:
            break
        exc = inner
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if args.command == "demo":
            from batchinfer.demo import run_demo

            run_demo()
            return 0
        if args.command == "check":
            from batchinfer.check import check_access

            print(check_access(args.input, args.output, S3Options.from_env(os.environ)))
            return 0
        if args.command == "report":
            from batchinfer.report import report_command

            print(report_command(args.output_uri, args.out, S3Options.from_env(
                os.environ, endpoint=args.s3_endpoint, region=args.s3_region)))
            return 0
        config = config_from_args(args)
        from batchinfer.pipeline import run_job

        print_summary(run_job(config))
        return 0
    except UserError as exc:
        print(f"batchinfer: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except LeaseLost as exc:  # another run owns the output now: nothing to debug here
        print(f"batchinfer: job failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("batchinfer: interrupted; rerun with --resume to keep what was finished", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - not the user's mistake: traceback, then one clear line
        traceback.print_exc()
        print(f"batchinfer: job failed: {failure_reason(exc)}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
