"""The naive baseline: Ray Data's documented batch-inference recipe, as a user would first write it.

read_images → row-wise map(torchvision transform) → map_batches(model class, ActorPoolStrategy(size=1),
batch_size=32, default actor resources) → write_parquet.
"""

from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs
import ray
import torch
from torchvision import transforms
from torchvision.models import get_model, get_model_weights


def make_transform(model: str) -> transforms.Compose:
    """ToTensor, then the weights' own eval preset (resize, center-crop, normalize)."""
    return transforms.Compose([transforms.ToTensor(), get_model_weights(model).DEFAULT.transforms()])


class Classifier:
    """Load the model in the actor; classify a batch of transformed images."""

    def __init__(self, model: str) -> None:
        self.categories = get_model_weights(model).DEFAULT.meta["categories"]
        self.model = get_model(model, weights=None).eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            logits = self.model(torch.as_tensor(batch["transformed"]))
        scores, indices = logits.softmax(dim=1).max(dim=1)
        return {"path": batch["path"], "label": np.array([self.categories[i] for i in indices]),
                "score": scores.numpy()}


def run_baseline(input_uri: str, output_uri: str, filesystem: pafs.FileSystem, model: str,
                 batch_size: int = 32) -> None:
    """Run the recipe end to end on the Ray cluster this process is connected to."""
    transform = make_transform(model)

    def preprocess(row: dict) -> dict:
        return {"path": row["path"], "transformed": transform(row["image"]).numpy()}

    (ray.data.read_images(input_uri, filesystem=filesystem, include_paths=True, mode="RGB")
     .map(preprocess)
     .map_batches(Classifier, fn_constructor_kwargs={"model": model},
                  compute=ray.data.ActorPoolStrategy(size=1), batch_size=batch_size)
     .write_parquet(output_uri, filesystem=filesystem))
