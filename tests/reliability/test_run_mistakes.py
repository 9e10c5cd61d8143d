"""Run-level mistakes: each exits 2 with one line that names the problem and the fix, before any work."""

from __future__ import annotations

import pytest

from batchinfer.cli import main
from devkit.samples import efficientnet_lite0_checkpoint
from tests.reliability.catalog import photo_crops
from tests.reliability.conftest import upload
from tests.support import free_port

BUCKET = "mistakes"
INPUT = f"s3://{BUCKET}/images/"
OUTPUT = f"s3://{BUCKET}/out/"
LITE0 = ["--model", "timm:efficientnet_lite0", "--weights", f"s3://{BUCKET}/models/lite0.pth"]


@pytest.fixture(scope="module")
def bucket(store) -> None:
    upload(store, BUCKET, {"images/a.jpg": photo_crops(1, 64)[0], "models/lite0.pth": efficientnet_lite0_checkpoint(),
                           "three-names.txt": b"cat\ndog\nfish\n", "not-images/readme.txt": b"hi"})


# (what is wrong, extra args or replaced --input/--output, environment overrides, words the line must hold)
MISTAKES = [
    ("bad URI scheme", ["--input", "gs://bucket/images/"], {}, ["unsupported URI scheme", "s3://BUCKET"]),
    ("URI without bucket", ["--input", "s3:///images/"], {}, ["no bucket", "s3://BUCKET"]),
    ("missing bucket", ["--input", "s3://no-such-bucket/images/"], {}, ["no-such-bucket", "does not exist"]),
    ("empty prefix", ["--input", f"s3://{BUCKET}/nothing-here/"], {}, ["found nothing", "check the input"]),
    ("prefix without images", ["--input", f"s3://{BUCKET}/not-images/"], {}, ["no images", "must end in"]),
    ("output inside input", ["--output", INPUT + "predictions/"], {}, ["inside --input", "outside the input"]),
    ("output at a bucket root", ["--output", f"s3://{BUCKET}/"], {}, ["bucket or filesystem root", "give a prefix"]),
    ("unreachable endpoint", ["--s3-endpoint", "http://127.0.0.1:{port}"], {}, ["cannot reach", "AWS_ENDPOINT_URL"]),
    ("wrong secret", [], {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, ["denied", "AWS_SECRET_ACCESS_KEY"]),
    ("half the key pair", [], {"AWS_SECRET_ACCESS_KEY": ""}, ["only one of", "set both"]),
    ("unknown model", ["--model", "resnet9000", "--weights", "none"], {}, ["unknown model", "torchvision"]),
    ("unknown timm model", ["--model", "timm:nonet", "--weights", "none"], {}, ["unknown timm model", "list_models"]),
    ("missing checkpoint", ["--model", "resnet18", "--weights", f"s3://{BUCKET}/models/nope.pth"], {},
     ["does not exist", "check the URI"]),
    ("mismatched checkpoint", ["--model", "resnet18", "--weights", f"s3://{BUCKET}/models/lite0.pth"], {},
     ["does not fit model resnet18", "--model it was trained with"]),
    ("not a checkpoint", ["--model", "resnet18", "--weights", f"s3://{BUCKET}/three-names.txt"], {},
     ["not a PyTorch state_dict", "torch.save"]),
    ("bad categories file", [*LITE0, "--categories", f"s3://{BUCKET}/three-names.txt"], {},
     ["has 3 names but the model has 1000 outputs", "one class name per line"]),
    ("--top-k out of range", ["--top-k", "5000"], {}, ["--top-k must be between 1 and 1000"]),
    ("--resume with --overwrite", ["--resume", "--overwrite"], {}, ["contradict", "pick one"]),
    ("bad --label-from-path", ["--label-from-path", "([a-z"], {}, ["not a valid regular expression", "example"]),
    ("--batch-size 0", ["--batch-size", "0"], {}, ["--batch-size", "must be at least 1", "--help"]),
    ("--storage-timeout -1", ["--storage-timeout", "-1"], {}, ["--storage-timeout", "greater than 0"]),
    ("unknown --device", ["--device", "tpu"], {}, ["--device", "invalid choice", "--help"]),
    ("--wait-for-lease -1", ["--wait-for-lease", "-1"], {}, ["--wait-for-lease must be 0 or more seconds"]),
]


def _run(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exit_:  # argparse's own errors
        return int(exit_.code)


@pytest.mark.parametrize(("extra", "env", "expected"), [case[1:] for case in MISTAKES],
                         ids=[case[0] for case in MISTAKES])
def test_mistake_exits_2_with_one_line(bucket, store, monkeypatch, capsys, extra, env, expected) -> None:
    for name, value in {**store.env(), **env}.items():
        monkeypatch.setenv(name, value)
    extra = [word.format(port=free_port()) for word in extra]
    args = {"--input": INPUT, "--output": OUTPUT}
    for flag in ("--input", "--output"):
        if flag in extra:
            args[flag] = extra.pop(extra.index(flag) + 1)
            extra.remove(flag)
    defaults = [] if "--model" in extra else ["--model", "resnet18", "--weights", "none"]
    returncode = _run(["run", "--input", args["--input"], "--output", args["--output"], *defaults, *extra])
    out, err = capsys.readouterr()
    assert returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batchinfer"), err
    for words in expected:
        assert words in lines[0], lines[0]
    assert store.secret_key not in err + out
