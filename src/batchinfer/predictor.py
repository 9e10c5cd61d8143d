"""The inference actor: load the model once, then normalize, forward, softmax and top-k per batch."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch.fx.experimental.optimization import fuse as fuse_conv_bn

from batchinfer import columns as col
from batchinfer.columns import prediction_schema
from batchinfer.gpu_decode import DeviceDecoder
from batchinfer.models import ModelRequest, load_model
from batchinfer.preprocess import Failure


@dataclass(frozen=True)
class InferenceSettings:
    """How the actor runs the model. `device` is resolved; precision 'auto' is bf16 (fp16 where the GPU
    lacks bf16) on CUDA and fp32 on CPU; `batch_size` (images per forward pass) None picks one from the
    device (`default_batch_size`); `fuse` folds BatchNorm into convolutions for fp32 CPU inference."""

    device: str = "cpu"
    precision: str = "auto"
    top_k: int = 5
    threads: int | None = None
    compile: bool = False
    batch_size: int | None = None
    fuse: bool = True


log = logging.getLogger(__name__)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BATCH_SIZE = 16  # on 2 cores ResNet-50 ran faster at 16 than at 32 (docs/benchmarks.md, Levers)
CUDA_ACTOR_BATCH = 2048  # images per inference call on CUDA: several forward batches, staged
# Images per forward pass on CUDA, by the GPU's total memory: (at least this many GiB, batch size).
CUDA_BATCH_SIZES = ((70, 512), (30, 256), (14, 128), (0, 64))
# The oldest NVIDIA driver branch each CUDA major version runs on (NVIDIA's CUDA Toolkit release notes,
# "CUDA Toolkit and Minimum Required Driver Version for CUDA Minor Version Compatibility", Linux).
MIN_DRIVER_BRANCH = {13: 580, 12: 525, 11: 450}


class CudaUnavailable(RuntimeError):
    """CUDA was asked for but cannot run here; the message is one line saying what the build needs."""


def _build_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities this torch build has kernels for (`sm_XY` in torch.cuda.get_arch_list()),
    lowest first."""
    return sorted((int(found[1]), int(found[2])) for arch in torch.cuda.get_arch_list()
                  if (found := re.fullmatch(r"sm_(\d+)(\d)[a-z]?", arch)))


def cuda_requirement() -> str:
    """What this torch build needs from a GPU node, read from the build itself (torch.version.cuda and
    its lowest compute capability)."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build: run the GPU image (docker/, default variant)"
    major = int(torch.version.cuda.split(".")[0])
    lowest = _build_capabilities()[:1]
    capability = f"{lowest[0][0]}.{lowest[0][1]}" if lowest else "(none listed)"
    return (f"torch {torch.__version__} is a CUDA {torch.version.cuda} build: it needs NVIDIA driver "
            f"R{MIN_DRIVER_BRANCH.get(major, '?')} or newer and a GPU of compute capability {capability} "
            "or higher")


def cuda_problem() -> str | None:
    """None when CUDA initialises here and this torch build has kernels for the GPU; otherwise one line:
    what the build needs, what the node reported, and how to go on. Run where a GPU actor would run."""
    where = f"on {socket.gethostname()}"
    fix = "install that driver on the GPU nodes, or run with --device cpu"
    if torch.version.cuda is None:
        return f"CUDA is unavailable {where}: {cuda_requirement()}, or run with --device cpu"
    try:
        torch.cuda.init()
        capability = torch.cuda.get_device_capability()
        name = torch.cuda.get_device_name()
    except Exception as error:  # noqa: BLE001 - torch reports a missing/old driver as several error types
        reported = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return f"CUDA cannot initialise {where}: {cuda_requirement()}; the driver reported: {reported} ({fix})"
    supported = _build_capabilities()
    if supported and capability < supported[0]:
        return (f"{name} {where} has compute capability {capability[0]}.{capability[1]}: {cuda_requirement()} "
                "(use a newer GPU, or run with --device cpu)")
    return None


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass: CPU_BATCH_SIZE on CPU; on CUDA from the GPU's memory (CUDA_BATCH_SIZES)."""
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    memory_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return next(size for floor_gib, size in CUDA_BATCH_SIZES if memory_gib >= floor_gib)


def fuse_for_cpu(module: torch.nn.Module) -> torch.nn.Module:
    """The model with each BatchNorm folded into the convolution before it (torch.fx): the same outputs
    up to float rounding, one pass less over every activation. Modules that torch.fx cannot trace
    symbolically (data-dependent control flow) and TorchScript files run as they are."""
    if isinstance(module, torch.jit.ScriptModule):
        return module
    try:
        return fuse_conv_bn(module)
    except Exception as error:  # noqa: BLE001 - symbolic tracing fails in many ways; eager always works
        log.info("running %s without Conv+BatchNorm folding: %s", type(module).__name__, error)
        return module


def normalize_label(name: str) -> str:
    """Compare class names loosely: case, spaces, underscores and dashes don't matter."""
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


def _strings(column: np.ndarray) -> list[str | None]:
    """A nullable string column as Python values (an all-null column arrives as NaN floats)."""
    return [value if isinstance(value, str) else None for value in column]


class Predictor:
    """A Ray Data callable class: one instance per actor, one model per instance.

    A batch arrives either decoded (`image`: uint8 NHWC crops) or, with GPU decode, as JPEG bytes plus
    the crops of the other images (see `Preprocessor`). It is cut into forward batches; on CUDA each
    forward batch is decoded/copied on a side stream while the previous one runs the model.
    """

    def __init__(self, request: ModelRequest, settings: InferenceSettings) -> None:
        self.device = torch.device(settings.device)
        if self.device.type == "cuda" and (problem := cuda_problem()):
            raise CudaUnavailable(problem)  # before loading anything: one line, in seconds
        if settings.threads:
            torch.set_num_threads(settings.threads)
        loaded = load_model(request)
        self.settings = settings
        self.model_name = request.model
        self.categories = np.array(loaded.categories, dtype=object)
        self.dtype = _DTYPES[resolve_precision(settings.precision, self.device)]
        self.batch_size = settings.batch_size or default_batch_size(self.device)
        module = loaded.module
        if settings.fuse and not settings.compile and self.device.type == "cpu" and self.dtype == torch.float32:
            module = fuse_for_cpu(module)  # before channels_last: the folded weights are new tensors
        module = module.to(self.device, memory_format=torch.channels_last)
        self.module = torch.compile(module) if settings.compile else module
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(loaded.transform.mean, device=self.device).view(shape) * 255
        self.std = torch.tensor(loaded.transform.std, device=self.device).view(shape) * 255
        self.top_k = min(settings.top_k, len(loaded.categories))
        self.crop_size = loaded.transform.crop_size
        self.decoder = DeviceDecoder(loaded.transform, self.device)
        self.copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        # An actor takes two calls at once (pipeline.ACTOR_CALLS_IN_FLIGHT): one prepares its batch while
        # the other runs the model. On CPU the model's threads already fill the actor's cores: two forwards
        # at once would run twice the threads on them, so the model runs one call at a time.
        self.model_turn = threading.Lock() if self.device.type == "cpu" else contextlib.nullcontext()

    def to_device(self, images: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 on the host -> (N, 3, H, W) uint8 on the device (pinned, non-blocking)."""
        batch = torch.from_numpy(np.ascontiguousarray(images))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        return batch.permute(0, 3, 1, 2)  # an NHWC buffer is channels_last NCHW already

    def to_model_input(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 on the device -> normalized float, channels_last."""
        return ((images.float() - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def load_images(self, batch: dict[str, np.ndarray], rows: np.ndarray
                    ) -> tuple[torch.Tensor, list[Failure | None]]:
        """Crops of `rows` on the device, from either batch layout, and per-row decode errors (GPU
        decode finds some files only now)."""
        if col.IMAGE in batch:
            return self.to_device(batch[col.IMAGE][rows]), [None] * len(rows)
        crops = torch.empty((len(rows), 3, self.crop_size, self.crop_size), dtype=torch.uint8,
                            device=self.device)
        errors: list[Failure | None] = [None] * len(rows)
        jpegs = batch[col.JPEG][rows]
        is_jpeg = np.array([isinstance(jpeg, bytes) for jpeg in jpegs], dtype=bool)
        if is_jpeg.any():
            decoded, jpeg_errors = self.decoder(list(jpegs[is_jpeg]), batch[col.ORIENTATION][rows][is_jpeg])
            crops[torch.from_numpy(np.flatnonzero(is_jpeg))] = decoded  # index, not a mask: no nonzero() sync
            for position, error in zip(np.flatnonzero(is_jpeg), jpeg_errors):
                errors[position] = error
        if not is_jpeg.all():
            shape = (self.crop_size, self.crop_size, 3)
            pixels = np.stack([np.frombuffer(data, dtype=np.uint8).reshape(shape)
                               for data in batch[col.PIXELS][rows][~is_jpeg]])
            crops[torch.from_numpy(np.flatnonzero(~is_jpeg))] = self.to_device(pixels)
        return crops, errors

    def _stage(self, batch: dict[str, np.ndarray], rows: np.ndarray
               ) -> tuple[torch.Tensor, list[Failure | None], torch.cuda.Event | None]:
        """Decode/copy `rows` onto the device; on CUDA on the side stream, with an event to wait for."""
        if self.copy_stream is None:
            return (*self.load_images(batch, rows), None)
        with torch.cuda.stream(self.copy_stream):
            images, errors = self.load_images(batch, rows)
            return images, errors, self.copy_stream.record_event()

    def _top_k(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (probabilities, class indices), left on the device."""
        inputs = self.to_model_input(images)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            logits = self.module(inputs)
        return logits.float().softmax(dim=1).topk(self.top_k, dim=1)

    @torch.inference_mode()
    def forward(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (probabilities, class indices) for one forward batch of host uint8 NHWC crops."""
        scores, indices = self._top_k(self.to_device(images))
        return scores.cpu().numpy(), indices.cpu().numpy()

    @torch.inference_mode()
    def classify(self, batch: dict[str, np.ndarray], rows: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, list[Failure | None]]:
        """Top-k for `rows` of a batch in forward batches of `batch_size`, and per-row decode errors.
        Forward batch i+1 is staged (decoded, copied) while batch i's model work runs on the GPU."""
        chunks = [rows[start:start + self.batch_size] for start in range(0, len(rows), self.batch_size)]
        scores, indices, errors = [], [], []
        staged = self._stage(batch, chunks[0])
        for following in [*chunks[1:], None]:
            images, chunk_errors, ready = staged
            if ready is not None:
                torch.cuda.current_stream(self.device).wait_event(ready)
                images.record_stream(torch.cuda.current_stream(self.device))
            chunk_scores, chunk_indices = self._top_k(images)
            scores.append(chunk_scores)
            indices.append(chunk_indices)
            errors.extend(chunk_errors)
            if following is not None:
                staged = self._stage(batch, following)
        return torch.cat(scores).cpu().numpy(), torch.cat(indices).cpu().numpy(), errors

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        paths, errors, kinds = batch[col.PATH], _strings(batch[col.ERROR]), _strings(batch[col.ERROR_KIND])
        rows = np.flatnonzero([error is None for error in errors])
        size = len(paths)
        labels, indices, scores = [None] * size, [None] * size, [None] * size
        topk_labels, topk_scores = [None] * size, [None] * size
        if len(rows):
            with self.model_turn:
                top_scores, top_indices, decode_errors = self.classify(batch, rows)
            for row, k_scores, k_indices, decode_error in zip(rows, top_scores, top_indices, decode_errors):
                if decode_error is not None:
                    kinds[row], errors[row] = decode_error
                    continue
                labels[row], indices[row], scores[row] = (self.categories[k_indices[0]], int(k_indices[0]),
                                                          float(k_scores[0]))
                topk_labels[row] = self.categories[k_indices].tolist()
                topk_scores[row] = k_scores.tolist()
        columns = {
            col.PATH: list(paths), col.LABEL: labels, col.LABEL_INDEX: indices, col.SCORE: scores,
            col.TOPK_LABELS: topk_labels, col.TOPK_SCORES: topk_scores, col.MODEL: [self.model_name] * size,
            col.ERROR: errors, col.ERROR_KIND: kinds,
        }
        with_truth = col.TRUE_LABEL in batch
        if with_truth:
            truths = _strings(batch[col.TRUE_LABEL])
            columns[col.TRUE_LABEL] = truths
            columns[col.CORRECT] = [None if label is None or truth is None
                                  else normalize_label(label) == normalize_label(truth)
                                  for label, truth in zip(labels, truths)]
        with_key = col.KEY in batch
        if with_key:
            columns[col.KEY] = _strings(batch[col.KEY])
        return pa.table(columns, schema=prediction_schema(with_truth, with_key))
