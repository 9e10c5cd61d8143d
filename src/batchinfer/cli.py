"""`batchinfer` command line: flags → JobConfig, user mistakes → one line and exit status 2."""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from typing import Any, Callable, NoReturn, Sequence

from batchinfer import interrupts
from batchinfer.config import Flag, JobConfig, S3Options, Stalled, UserError, flag_fields

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends with the flag's default (from the configuration), where it has a fixed one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default in (None, False, argparse.SUPPRESS):
            return action.help
        default = f"{action.default:g}" if isinstance(action.default, float) else action.default
        return f"{action.help} (default: {default})"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line that names the problem and where to look."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A config parser as an argparse type: its ValueError becomes argparse's one-line usage error."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def add_flags(parser: argparse.ArgumentParser, *configs: type, only: Sequence[str] | None = None) -> None:
    """Add the flags of configuration dataclasses (all, or the fields named in `only`) to `parser`,
    each in its group; the argument's dest is the field's name."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec_field, spec in (item for config in configs for item in flag_fields(config)):
        if only is not None and spec_field.name not in only:
            continue
        if spec.group not in groups:
            groups[spec.group] = parser.add_argument_group(spec.group)
        groups[spec.group].add_argument(spec.name, dest=spec_field.name, **_argparse_options(spec, spec_field.default))


def _argparse_options(spec: Flag, default: Any) -> dict[str, Any]:
    if isinstance(default, bool):
        return {"action": "store_true", "help": spec.help}
    options: dict[str, Any] = {"help": spec.help, "metavar": spec.metavar, "choices": spec.choices}
    if spec.required:
        options["required"] = True
    else:
        options["default"] = default
    if spec.parse is not None:
        options["type"] = _argument_type(spec.parse)
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="batchinfer", description="Batch image classification on Ray Data: "
                           "images in object storage → PyTorch model → Parquet predictions.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    run = commands.add_parser("run", help="classify every image under a prefix",
                              description="Classify every image under --input and write Parquet to --output. "
                              "S3 access comes from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                              "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION.")
    add_flags(run, JobConfig, S3Options)

    check = commands.add_parser("check", help="check storage access: list and read the input, write the output",
                                description="List --input and read one image, write and delete a probe "
                                "object under --output, with the same AWS_* environment as `run`.")
    add_flags(check, JobConfig, only=("input_uri", "output_uri"))

    report = commands.add_parser("report", help="(re)build the HTML report of a finished output",
                                 description="Build the HTML report of a finished run and write it next to "
                                 "its summary, or to a local file with -o.")
    report.add_argument("output_uri", metavar="OUTPUT_URI", help="the --output of a finished run")
    report.add_argument("-o", "--out", metavar="FILE", help="write the report to this local file instead")
    add_flags(report, S3Options)
    return parser


def _s3_options(args: argparse.Namespace) -> S3Options:
    """The AWS_* environment, with --s3-endpoint/--s3-region (where the command has them) on top."""
    return S3Options.from_env(os.environ, endpoint=getattr(args, "endpoint", None),
                              region=getattr(args, "region", None))


def config_from_args(args: argparse.Namespace) -> JobConfig:
    values = {spec_field.name: getattr(args, spec_field.name) for spec_field, _ in flag_fields(JobConfig)}
    return JobConfig(**values, s3=_s3_options(args)).validate()


def print_summary(summary: dict) -> None:
    """The run's summary as a two-column table."""
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
    """The `batchinfer` command; returns its exit status. Ctrl-C is handled as interrupts.py says. `argv`
    None: this process is the command, which ends it once its last line is out (interrupts.end_process:
    no exit hooks, in which a Ctrl-C could still end it otherwise); a caller that passes `argv` gets
    the status back, and its own SIGINT handler."""
    with interrupts.handled(restore=argv is not None):
        try:
            status = _command(build_parser().parse_args(argv))
        except KeyboardInterrupt:
            interrupts.say(interrupts.interrupted_line())
            status = interrupts.EXIT_INTERRUPTED
        if argv is None:
            interrupts.end_process(status)
        return status


def _command(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if args.command == "check":
            from batchinfer.check import check_access

            print(check_access(args.input_uri, args.output_uri, _s3_options(args)))
            return 0
        if args.command == "report":
            from batchinfer.report import report_command

            print(report_command(args.output_uri, args.out, _s3_options(args)))
            return 0
        config = config_from_args(args)
        from batchinfer.pipeline import JobStatus, run_job

        result = run_job(config)
        interrupts.raise_if_interrupted()
        if result.status is JobStatus.COMMITTED:
            print_summary(result.summary)
        else:
            print(f"{result.output_uri} is {result.status.value}; nothing to resume")
        return 0
    except Exception as exc:  # noqa: BLE001 - each kind of failure gets its line (`_failed`)
        interrupts.raise_if_interrupted()  # a failure that follows Ctrl-C (Ray Data torn down) is the interruption
        return _failed(exc)


def _failed(exc: Exception) -> int:
    """Print the one line a command that raised `exc` ends with (after a traceback, for a failure that is
    neither the user's mistake nor explained by its own message); return its exit status."""
    from batchinfer.lease import LeaseLost

    if isinstance(exc, UserError):
        print(f"batchinfer: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    if isinstance(exc, Stalled):  # the message says what the stuck stage waits for
        print(f"batchinfer: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if isinstance(exc, LeaseLost):  # another run owns the output now: nothing to debug here
        print(f"batchinfer: job failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    traceback.print_exception(exc)
    print(f"batchinfer: job failed: {failure_reason(exc)}", file=sys.stderr)
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
