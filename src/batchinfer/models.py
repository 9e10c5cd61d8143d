"""Model specs (torchvision name, `timm:<name>`, TorchScript/ExportedProgram file), weights, class names."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

import torch
import torchvision
from torchvision.models import get_model, get_model_weights

from batchinfer.config import S3Options, UserError
from batchinfer.preprocess import EvalTransform
from batchinfer.storage import explain, read_bytes, resolve

MODEL_FILE_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".jit")
_CHECKPOINT_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema")


@dataclass(frozen=True)
class ModelRequest:
    """What the user asked for; small and picklable, so every inference actor loads the same model."""

    model: str
    weights: str = "default"
    categories: str | None = None
    s3: S3Options = S3Options()


@dataclass
class LoadedModel:
    module: torch.nn.Module
    transform: EvalTransform
    categories: list[str]


def imagenet_categories() -> list[str]:
    """The ImageNet-1k class names (metadata shipped with torchvision; no download)."""
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _read_uri(uri: str, s3: S3Options, what: str) -> bytes:
    location = resolve(uri, s3)
    try:
        return read_bytes(location.filesystem, location.path)
    except FileNotFoundError:
        raise UserError(f"{what} {uri} does not exist: check the URI") from None
    except (OSError, ValueError) as exc:
        raise explain(exc, uri, s3) from None


def load_checkpoint(uri: str, s3: S3Options) -> dict[str, torch.Tensor]:
    """A state_dict from a URI, unwrapped from common training-checkpoint layouts."""
    data = _read_uri(uri, s3, "checkpoint")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user mistake
        raise UserError(f"{uri} is not a PyTorch state_dict checkpoint ({type(exc).__name__}); save one "
                        "with torch.save(model.state_dict(), path)") from None
    for key in _CHECKPOINT_WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{uri} holds no state_dict of tensors: save one with "
                        "torch.save(model.state_dict(), path)")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _mismatch_summary(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = [f"{len(names)} {label} (e.g. {names[0]!r})"
             for names, label in ((missing, "missing keys"), (unexpected, "unexpected keys"),
                                  (shapes, "shape mismatches")) if names]
    return ", ".join(parts) or "incompatible tensors"


def fit_checkpoint(build: Callable[[int | None], torch.nn.Module], state: Mapping[str, torch.Tensor],
                   model_name: str, uri: str) -> torch.nn.Module:
    """Load `state` strictly; if only the classifier width differs, rebuild with that many classes."""
    module = build(None)
    last_key = list(module.state_dict())[-1]
    if last_key in state and state[last_key].shape != module.state_dict()[last_key].shape:
        module = build(int(state[last_key].shape[0]))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError:
        raise UserError(f"checkpoint {uri} does not fit model {model_name}: "
                        f"{_mismatch_summary(module, state)}; pass the --model it was trained with") from None
    return module


def _download_failed(model_name: str, exc: Exception) -> UserError:
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return UserError(f"could not download the pretrained weights for {model_name} ({reason}): "
                     "--weights default needs internet access; pass a state_dict with "
                     "--weights s3://BUCKET/model.pth, or --weights none")


def _torchvision_model(name: str, weights: str, s3: S3Options) -> tuple[torch.nn.Module, EvalTransform, list]:
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise UserError(f"unknown model {name!r}: use a torchvision classification model name "
                        "(resnet50, efficientnet_b0, vit_b_16, …), timm:<name>, or a TorchScript file")
    reference = get_model_weights(name).DEFAULT
    transform = EvalTransform.from_torchvision(reference.transforms())
    if weights == "default":
        try:
            module = get_model(name, weights=reference)
        except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, hash mismatch…
            raise _download_failed(name, exc) from None
    elif weights == "none":
        module = get_model(name, weights=None)
    else:
        state = load_checkpoint(weights, s3)
        module = fit_checkpoint(lambda n: get_model(name, weights=None, **({"num_classes": n} if n else {})),
                                state, name, weights)
    return module, transform, list(reference.meta["categories"])


def _timm_model(name: str, weights: str, s3: S3Options) -> tuple[torch.nn.Module, EvalTransform, list]:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        raise UserError("timm models need the timm package: pip install 'batchinfer[timm]'") from None
    if not timm.is_model(name):
        raise UserError(f"unknown timm model {name!r}: see timm.list_models() for names")
    if weights == "default":
        try:
            module = timm.create_model(name, pretrained=True)
        except Exception as exc:  # noqa: BLE001 - hub errors come in many types
            raise _download_failed(f"timm:{name}", exc) from None
    elif weights == "none":
        module = timm.create_model(name, pretrained=False)
    else:
        state = load_checkpoint(weights, s3)
        module = fit_checkpoint(
            lambda n: timm.create_model(name, pretrained=False, **({"num_classes": n} if n else {})),
            state, f"timm:{name}", weights)
    return module, EvalTransform.from_timm(resolve_data_config({}, model=module)), []


def _model_file(uri: str, weights: str, s3: S3Options) -> tuple[torch.nn.Module, EvalTransform, list]:
    if weights not in ("default", "none"):
        raise UserError("--weights does not apply to a TorchScript/ExportedProgram file, which carries "
                        "its own weights: drop --weights")
    data = _read_uri(uri, s3, "model file")
    try:
        if uri.endswith(".pt2"):
            module = torch.export.load(io.BytesIO(data)).module()
        else:
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{uri} is not a TorchScript (.pt) or ExportedProgram (.pt2) file "
                        f"({type(exc).__name__}); for a state_dict use --model NAME --weights {uri}") from None
    return module, EvalTransform(), []


def _is_model_file(spec: str) -> bool:
    return "://" in spec or "/" in spec or PurePosixPath(spec).suffix.lower() in MODEL_FILE_SUFFIXES


def _categories(request: ModelRequest, num_outputs: int, known: list[str]) -> list[str]:
    if request.categories:
        text = _read_uri(request.categories, request.s3, "categories file").decode("utf-8", "replace")
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if len(names) != num_outputs:
            raise UserError(f"categories file {request.categories} has {len(names)} names but the model "
                            f"has {num_outputs} outputs: give one class name per line, in output order")
        return names
    if len(known) == num_outputs:
        return known
    if num_outputs == 1000:
        return imagenet_categories()
    return [f"class_{index}" for index in range(num_outputs)]


def load_model(request: ModelRequest) -> LoadedModel:
    """Build the model on CPU in eval mode, with its transform and class names. UserError on mistakes."""
    spec = request.model
    if spec.startswith("timm:"):
        module, transform, known = _timm_model(spec.removeprefix("timm:"), request.weights, request.s3)
    elif _is_model_file(spec):
        module, transform, known = _model_file(spec, request.weights, request.s3)
    else:
        module, transform, known = _torchvision_model(spec, request.weights, request.s3)
    module.eval()
    with torch.inference_mode():
        probe = module(torch.zeros(1, 3, transform.crop_size, transform.crop_size))
    if not isinstance(probe, torch.Tensor) or probe.ndim != 2:
        raise UserError(f"model {spec} does not return class scores of shape (batch, classes)")
    return LoadedModel(module, transform, _categories(request, probe.shape[1], known))
