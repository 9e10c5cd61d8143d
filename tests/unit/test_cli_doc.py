"""Flags are defined once in config.py: the parser and docs/cli.md come from those definitions
(unit tier: no S3 server, no Ray)."""
from __future__ import annotations

import os

from batchinfer.cli import build_parser, config_from_args
from batchinfer.config import JobConfig, S3Options, flag_fields
from tests.cli_doc import DOC, render


def test_cli_doc_is_generated_from_the_parser() -> None:
    assert DOC.read_text() == render(), "docs/cli.md is out of date: run python -m tests.cli_doc"


def test_flag_defaults_are_the_config_defaults() -> None:
    args = build_parser().parse_args(["run", "--input", "s3://in/", "--output", "s3://out/"])
    assert config_from_args(args) == JobConfig("s3://in/", "s3://out/", s3=S3Options.from_env(os.environ))


def test_every_config_flag_is_documented() -> None:
    doc = DOC.read_text()
    for config in (JobConfig, S3Options):
        for _, spec in flag_fields(config):
            assert f"`{spec.name} " in doc or f"`{spec.name}`" in doc, spec.name
