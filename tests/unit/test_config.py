"""config.py: --num-workers parsing, S3 settings from the environment, and JobConfig.validate, which
turns every bad value into a one-line UserError naming the flag, before any work."""

from __future__ import annotations

import re

import pytest

from batchinfer.config import JobConfig, S3Options, UserError, parse_worker_range

JOB = {"input_uri": "s3://b/in/", "output_uri": "s3://b/out/"}


@pytest.mark.parametrize(("text", "expected"), [("4", (4, 4)), ("1-8", (1, 8)), (" 2 - 3 ", (2, 3)), ("5-5", (5, 5))])
def test_worker_range(text, expected) -> None:
    assert parse_worker_range(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "expected N or MIN-MAX"), ("many", "expected N or MIN-MAX"), ("1-", "expected N or MIN-MAX"),
    ("-2", "expected N or MIN-MAX"), ("1.5", "expected N or MIN-MAX"), ("0", "expected 1 <= MIN <= MAX"),
    ("4-2", "expected 1 <= MIN <= MAX"), ("0-3", "expected 1 <= MIN <= MAX"),
])
def test_bad_worker_range(text, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_worker_range(text)


def test_s3_options_from_the_standard_aws_variables() -> None:
    env = {"AWS_ENDPOINT_URL": "http://generic:8333", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIA",
           "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_SESSION_TOKEN": "token"}
    options = S3Options.from_env(env)
    assert options == S3Options("http://generic:8333", "eu-west-1", "AKIA", "s3cr3t", "token")


def test_s3_options_precedence() -> None:
    """The S3-specific endpoint beats the generic one, AWS_REGION beats AWS_DEFAULT_REGION, flags beat both."""
    env = {"AWS_ENDPOINT_URL": "http://generic:8333", "AWS_ENDPOINT_URL_S3": "http://s3-only:8333",
           "AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert S3Options.from_env(env) == S3Options("http://s3-only:8333", "us-west-2")
    assert S3Options.from_env(env, endpoint="http://flag:9000", region="ap-south-1") == S3Options(
        "http://flag:9000", "ap-south-1")


def test_empty_variables_count_as_unset() -> None:
    env = {"AWS_ENDPOINT_URL": "", "AWS_REGION": "", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    assert S3Options.from_env(env) == S3Options()


def test_secrets_stay_out_of_repr() -> None:
    text = repr(S3Options("http://s3:8333", "us-east-1", "AKIA-visible-id", "the-secret", "the-token"))
    assert "the-secret" not in text and "the-token" not in text and "AKIA-visible-id" not in text
    assert "http://s3:8333" in text


def test_defaults_are_valid() -> None:
    config = JobConfig(**JOB)
    assert config.validate() is config


@pytest.mark.parametrize(("changes", "flag"), [
    ({"batch_size": 0}, "--batch-size must be at least 1 (got 0)"),
    ({"top_k": 0}, "--top-k must be between 1 and 1000 (got 0)"),
    ({"top_k": 1001}, "--top-k must be between 1 and 1000 (got 1001)"),
    ({"limit": 0}, "--limit must be at least 1 (got 0)"),
    ({"rows_per_file": 0}, "--rows-per-file must be at least 1 (got 0)"),
    ({"num_workers": (3, 1)}, "--num-workers must be N or MIN-MAX with 1 <= MIN <= MAX (got (3, 1))"),
    ({"num_workers": (0, 2)}, "--num-workers must be N or MIN-MAX"),
    ({"num_gpus_per_worker": 0}, "--num-gpus-per-worker must be greater than 0 (got 0)"),
    ({"num_cpus_per_worker": -1}, "--num-cpus-per-worker must be greater than 0 (got -1)"),
    ({"device": "tpu"}, "--device must be one of auto, cpu, cuda (got 'tpu')"),
    ({"precision": "int8"}, "--precision must be one of auto, fp32, bf16, fp16 (got 'int8')"),
    ({"gpu_decode": "yes"}, "--gpu-decode must be one of auto, on, off (got 'yes')"),
    ({"resume": True, "overwrite": True}, "--resume and --overwrite contradict each other: pick one"),
    ({"weights": ""}, "--weights must be 'default', 'none' or a checkpoint URI"),
    ({"storage_timeout_s": 0}, "--storage-timeout must be greater than 0 seconds (got 0)"),
    ({"max_image_pixels": 0}, "--max-image-pixels must be at least 1 (got 0)"),
    ({"wait_for_lease_s": -1}, "--wait-for-lease must be 0 or more seconds (got -1)"),
    ({"stall_timeout_s": 0}, "--stall-timeout must be greater than 0 seconds (got 0)"),
])
def test_each_bad_value_is_one_line_naming_the_flag(changes, flag) -> None:
    with pytest.raises(UserError) as refused:
        JobConfig(**JOB, **changes).validate()
    assert str(refused.value).startswith(flag) and "\n" not in str(refused.value)


def test_bad_label_regex_shows_an_example() -> None:
    with pytest.raises(UserError, match=r"--label-from-path is not a valid regular expression .*example: "):
        JobConfig(**JOB, label_from_path="([^/]+/").validate()


def test_label_regex_that_compiles_is_accepted() -> None:
    assert JobConfig(**JOB, label_from_path=r"([^/]+)/[^/]+$").validate().label_from_path == r"([^/]+)/[^/]+$"
