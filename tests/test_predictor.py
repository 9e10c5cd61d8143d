"""The inference actor on CPU: folding BatchNorm into convolutions changes the speed, not the answers."""

from __future__ import annotations

import io

import numpy as np
import torch
import torchvision
from PIL import Image

from batchinfer.models import ModelRequest, load_model
from batchinfer.predictor import InferenceSettings, Predictor, fuse_for_cpu
from tests.support import photo_dir


PHOTOS = photo_dir()
PNG_PHOTOS = ["coffee.png", "chelsea.png", "astronaut.png", "motorcycle_left.png"]


def batch_norms(module: torch.nn.Module) -> int:
    return sum(isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) for layer in module.modules())


def photo_batch(size: int = 224) -> torch.Tensor:
    """Real photos, resized, normalized like ImageNet: (N, 3, size, size) float."""
    images = [np.asarray(Image.open(PHOTOS / name).convert("RGB").resize((size, size))) for name in PNG_PHOTOS]
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def with_trained_statistics(module: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms (fresh ones are an identity, which
    any folding would reproduce exactly)."""
    generator = torch.Generator().manual_seed(0)
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            shape = layer.running_mean.shape
            layer.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
            layer.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.rand(shape, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.randn(shape, generator=generator) * 0.1)
    return module.eval()


@torch.inference_mode()
def test_folding_keeps_outputs_and_removes_every_batch_norm() -> None:
    for name in ("resnet18", "mobilenet_v3_small", "regnet_y_400mf"):
        model = with_trained_statistics(torchvision.models.get_model(name, weights=None))
        fused = fuse_for_cpu(model)
        images = photo_batch()
        expected, got = model(images), fused(images)
        assert batch_norms(model) > 0 and batch_norms(fused) == 0, name
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item()), name
        assert torch.equal(got.argmax(dim=1), expected.argmax(dim=1)), name


def test_predictor_folds_on_cpu_fp32_by_default() -> None:
    request = ModelRequest("resnet18", "none")
    assert batch_norms(Predictor(request, InferenceSettings(device="cpu")).module) == 0
    assert batch_norms(Predictor(request, InferenceSettings(device="cpu", fuse=False)).module) > 0
    assert batch_norms(Predictor(request, InferenceSettings(device="cpu", precision="bf16")).module) > 0


def test_pretrained_predictions_unchanged(lite0) -> None:
    """The real EfficientNet-Lite0 weights: the same top-k on real photos with and without folding."""
    crops = (photo_batch() * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
             + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
    crops = (crops.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    folded = Predictor(lite0, InferenceSettings(device="cpu")).forward(crops)
    plain = Predictor(lite0, InferenceSettings(device="cpu", fuse=False)).forward(crops)
    assert np.array_equal(folded[1], plain[1]) and np.allclose(folded[0], plain[0], atol=1e-5)
    assert load_model(lite0).categories[folded[1][0][0]] == "espresso"  # coffee.png


class DataDependent(torch.nn.Module):
    """A model torch.fx cannot trace symbolically: control flow on tensor values."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.norm(self.conv(images))
        return features.mean(dim=(2, 3)) if features.sum() > 0 else -features.mean(dim=(2, 3))


def test_untraceable_and_torchscript_models_run_as_they_are() -> None:
    model = with_trained_statistics(DataDependent())
    assert fuse_for_cpu(model) is model
    scripted = torch.jit.script(with_trained_statistics(torchvision.models.resnet18()))
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
    assert fuse_for_cpu(loaded) is loaded
