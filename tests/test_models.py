"""Model specs, checkpoints from s3:// and files, class names, and the mistakes users make with them."""

from __future__ import annotations

import io

import pytest
import torch
import torchvision

from batchinfer.config import S3Options, UserError
from batchinfer.models import ModelRequest, imagenet_categories, load_model


def save_state(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getvalue()


def test_checkpoint_from_s3_gives_the_same_weights(s3, s3_options, samples) -> None:
    loaded = load_model(ModelRequest("timm:efficientnet_lite0", samples["checkpoint"], s3=s3_options))
    stored = torch.load(io.BytesIO(s3.client().get_object(Bucket="samples", Key="models/efficientnet_lite0.pth")
                                   ["Body"].read()), weights_only=True)
    state = loaded.module.state_dict()
    assert all(torch.equal(state[key], value) for key, value in stored.items())
    assert loaded.categories == imagenet_categories() and loaded.categories[967] == "espresso"
    assert (loaded.transform.resize_size, loaded.transform.crop_size) == (256, 224)


def test_checkpoint_from_file_with_custom_classes_and_categories(tmp_path) -> None:
    model = torchvision.models.resnet18(num_classes=3)
    (tmp_path / "dogs.pth").write_bytes(save_state(model))
    (tmp_path / "dogs.txt").write_text("beagle\npug\nsamoyed\n")
    loaded = load_model(ModelRequest("resnet18", str(tmp_path / "dogs.pth"), str(tmp_path / "dogs.txt")))
    assert loaded.categories == ["beagle", "pug", "samoyed"]
    assert torch.equal(loaded.module.fc.weight, model.fc.weight)


def test_training_checkpoint_wrappers_are_unwrapped(tmp_path) -> None:
    model = torchvision.models.resnet18()
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "train.pth")
    loaded = load_model(ModelRequest("resnet18", str(tmp_path / "train.pth")))
    assert torch.equal(loaded.module.conv1.weight, model.conv1.weight)


def test_torchscript_file_model(tmp_path) -> None:
    scripted = torch.jit.script(torchvision.models.resnet18(num_classes=10).eval())
    scripted.save(str(tmp_path / "model.pt"))
    loaded = load_model(ModelRequest(str(tmp_path / "model.pt"), "none"))
    assert loaded.categories == [f"class_{i}" for i in range(10)]


@pytest.mark.parametrize(("request_args", "message"), [
    (("resnet9000", "none"), "unknown model 'resnet9000'"),
    (("timm:not_a_model", "none"), "unknown timm model"),
    (("resnet50", "file:///nonexistent/ckpt.pth"), "does not exist"),
])
def test_model_mistakes(request_args, message) -> None:
    with pytest.raises(UserError, match=message):
        load_model(ModelRequest(*request_args))


def test_mismatched_checkpoint_names_the_problem(tmp_path) -> None:
    (tmp_path / "r18.pth").write_bytes(save_state(torchvision.models.resnet18()))
    with pytest.raises(UserError, match=r"does not fit model resnet50: .*missing keys.*--model"):
        load_model(ModelRequest("resnet50", str(tmp_path / "r18.pth")))


def test_not_a_checkpoint(tmp_path) -> None:
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(UserError, match="not a PyTorch state_dict"):
        load_model(ModelRequest("resnet18", str(tmp_path / "notes.pth")))


def test_categories_count_must_match(tmp_path) -> None:
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    with pytest.raises(UserError, match="has 2 names but the model has 1000 outputs"):
        load_model(ModelRequest("resnet18", "none", str(tmp_path / "two.txt")))


def test_default_weights_without_network_is_a_clear_error(monkeypatch, tmp_path) -> None:
    """The real download is tried through a dead proxy (as on a cluster without egress); the user gets the fix."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: the download must really be tried
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(UserError, match="could not download the pretrained weights for resnet18.*--weights none"):
        load_model(ModelRequest("resnet18", "default", s3=S3Options()))
