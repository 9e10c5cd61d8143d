"""The inference actor: load the model once, then normalize, forward, softmax and top-k per batch."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from batchinfer.models import ModelRequest, load_model
from batchinfer.sink import prediction_schema


@dataclass(frozen=True)
class InferenceSettings:
    """How the actor runs the model. `device` is resolved; precision 'auto' is bf16 (fp16 where the GPU
    lacks bf16) on CUDA and fp32 on CPU."""

    device: str = "cpu"
    precision: str = "auto"
    top_k: int = 5
    threads: int | None = None
    compile: bool = False


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def normalize_label(name: str) -> str:
    """Compare class names loosely: case, spaces, underscores and dashes don't matter."""
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


def _strings(column: np.ndarray) -> list[str | None]:
    """A nullable string column as Python values (an all-null column arrives as NaN floats)."""
    return [value if isinstance(value, str) else None for value in column]


class Predictor:
    """A Ray Data callable class: one instance per actor, one model per instance."""

    def __init__(self, request: ModelRequest, settings: InferenceSettings) -> None:
        if settings.threads:
            torch.set_num_threads(settings.threads)
        loaded = load_model(request)
        self.settings = settings
        self.model_name = request.model
        self.categories = np.array(loaded.categories, dtype=object)
        self.device = torch.device(settings.device)
        self.dtype = _DTYPES[resolve_precision(settings.precision, self.device)]
        module = loaded.module.to(self.device, memory_format=torch.channels_last)
        self.module = torch.compile(module) if settings.compile else module
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(loaded.transform.mean, device=self.device).view(shape) * 255
        self.std = torch.tensor(loaded.transform.std, device=self.device).view(shape) * 255
        self.top_k = min(settings.top_k, len(loaded.categories))

    def to_model_input(self, images: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> normalized (N, 3, H, W) float, channels_last, on the device."""
        batch = torch.from_numpy(images)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2).float()  # an NHWC buffer is channels_last NCHW already
        return ((batch - self.mean) / self.std).to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (probabilities, class indices) for a batch of uint8 crops."""
        inputs = self.to_model_input(images)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            logits = self.module(inputs)
        scores, indices = logits.float().softmax(dim=1).topk(self.top_k, dim=1)
        return scores.cpu().numpy(), indices.cpu().numpy()

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        paths, errors = batch["path"], _strings(batch["error"])
        ok = np.array([error is None for error in errors], dtype=bool)
        size = len(paths)
        labels, indices, scores = [None] * size, [None] * size, [None] * size
        topk_labels, topk_scores = [None] * size, [None] * size
        if ok.any():
            top_scores, top_indices = self.forward(batch["image"][ok])
            for row, k_scores, k_indices in zip(np.flatnonzero(ok), top_scores, top_indices):
                labels[row], indices[row], scores[row] = (self.categories[k_indices[0]], int(k_indices[0]),
                                                          float(k_scores[0]))
                topk_labels[row] = self.categories[k_indices].tolist()
                topk_scores[row] = k_scores.tolist()
        columns = {
            "path": list(paths), "label": labels, "label_index": indices, "score": scores,
            "topk_labels": topk_labels, "topk_scores": topk_scores, "model": [self.model_name] * size,
            "error": errors,
        }
        with_truth = "true_label" in batch
        if with_truth:
            truths = _strings(batch["true_label"])
            columns["true_label"] = truths
            columns["correct"] = [None if label is None or truth is None
                                  else normalize_label(label) == normalize_label(truth)
                                  for label, truth in zip(labels, truths)]
        return pa.table(columns, schema=prediction_schema(with_truth))
