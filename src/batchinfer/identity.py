"""Which job an output's results belong to, and what a run may do with an output that holds some:
`--overwrite` replaces them, `--resume` continues them only when they are of the same job."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from batchinfer.config import JobConfig, UserError
from batchinfer.layout import JOB, STAGING, SUMMARY, Output
from batchinfer.storage import read_bytes, write_bytes


@dataclass(frozen=True)
class JobIdentity:
    """What makes two runs the same job for `--resume`: their staged results are interchangeable."""

    input: str
    model: str
    weights: str
    categories: str | None
    top_k: int
    label_from_path: str | None
    path_column: str | None = None  # manifest input: which column names the objects
    key_column: str | None = None   # manifest input: carried into the output as `key`

    @classmethod
    def of(cls, config: JobConfig) -> "JobIdentity":
        return cls(config.input_uri, config.model, config.weights, config.categories, config.top_k,
                   config.label_from_path, config.path_column, config.key_column)

    def as_dict(self) -> dict:
        return asdict(self)

    def changes_from(self, earlier: dict) -> str:
        """What differs from an earlier run's identity (as stored), e.g. "model 'a' -> 'b'"; "" if nothing."""
        return ", ".join(f"{key} {earlier.get(key)!r} -> {value!r}" for key, value in self.as_dict().items()
                         if earlier.get(key) != value)


def earlier_identity(committed: bool, summary: dict | None, job_file: dict | None) -> dict | None:
    """The identity an output's earlier run recorded: in summary.json once committed, else in the
    staging area's job.json; None when there is none."""
    return (summary or {}).get("job") if committed else job_file


def check_same_job(identity: JobIdentity, earlier: dict | None, output_uri: str) -> None:
    """`--resume` continues only the same job: a UserError naming what changed otherwise."""
    if earlier is None:
        return
    changed = identity.changes_from(earlier)
    if changed:
        raise UserError(f"--resume: {output_uri} holds results of a different job ({changed}): "
                        "pass --overwrite to replace them, or choose another --output")


def _read_json(output: Output, path: str) -> dict | None:
    try:
        return json.loads(read_bytes(output.fs, path))
    except FileNotFoundError:
        return None


def check_output(output: Output, overwrite: bool, resume: bool, identity: JobIdentity) -> None:
    """Refuse, before any work, to run over a finished output unless asked to, and to resume the
    results of a different job."""
    committed = output.is_committed()
    if committed and not (overwrite or resume):
        raise UserError(f"{output.location.uri()} already holds a finished run (_SUCCESS): pass "
                        "--overwrite to replace it, --resume to accept it, or choose another --output")
    if not resume:
        return
    summary = _read_json(output, output.meta.join(SUMMARY)) if committed else None
    job_file = None if committed else _read_json(output, output.meta.join(STAGING, JOB))
    check_same_job(identity, earlier_identity(committed, summary, job_file), output.location.uri())


def prepare_output(output: Output, resume: bool, identity: JobIdentity) -> bool:
    """Clear or reuse what is at the output prefix, and record `identity` in the staging area; False
    when a resumed output is already complete.

    Without --resume, leftovers of a crashed run (staging, part files of an interrupted commit) are
    removed, never mixed in. With it, part files of an interrupted commit go (staging still has them).
    """
    if output.is_committed() and resume:
        return False
    output.clear(staging=not resume)
    if output.location.scheme != "s3":  # local writes need their directories; S3 has none
        output.fs.create_dir(output.staging_root, recursive=True)
        output.fs.create_dir(output.location.path, recursive=True)
    write_bytes(output.fs, output.meta.join(STAGING, JOB), json.dumps(identity.as_dict()).encode())
    return True
