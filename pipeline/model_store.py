"""Segmentation models on disk: a folder with ``weights.pt`` (a torch state_dict) and ``model_card.json``.

The card says what the model expects and how it was made: input bands and indices, their normalisation, the
classes, the architecture, the training data and command, and the metrics per epoch and on held-out ground.
A model trained on the sample region ships in the package as the default (``mtg/pipeline/models/mine_unet_sample``)
so that ``mtg run`` and ``mtg segment`` work offline, and one trained on 24 sample-world districts and the west of
the sample region beside it (``--model mine_unet_world``: far better on unseen districts, not the default because it
misses two small young sites of the 3 km sample; docs/segmentation.md); :func:`load_model` keeps one loaded copy
per process and device.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mtg.pipeline.catalogs import format_validation_error
from mtg.pipeline.errors import MtgError
from mtg.pipeline.table_io import atomic_folder

log = logging.getLogger(__name__)

SHIPPED_MODEL = "mine_unet_sample"
WEIGHTS = "weights.pt"
CARD = "model_card.json"


class _Card(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Inputs(_Card):
    """What goes into the model: channels of the composite and their normalisation."""

    bands: list[str]
    indices: list[str]
    composite: str
    resolution_m: float = Field(gt=0)
    mean: list[float]
    std: list[float]


class Architecture(_Card):
    """The network: :class:`mtg.pipeline.unet.UNet` and its arguments."""

    name: str = "unet"
    in_channels: int = Field(ge=1)
    n_classes: int = Field(ge=2)
    widths: list[int]
    norm: Literal["batch", "group"] = "batch"
    parameters: int = Field(ge=1)


class ModelCard(_Card):
    """The model card (``model_card.json``)."""

    name: str
    weights: str = WEIGHTS
    weights_format: str = "torch state_dict (torch.save)"
    architecture: Architecture
    inputs: Inputs
    classes: list[str]
    training: dict[str, Any]
    metrics: dict[str, Any]
    limitations: str = ""


def shipped_model_dir() -> Path:
    """The folder of the model that ships in the package."""
    return Path(str(files("mtg.pipeline") / "models" / SHIPPED_MODEL))


def resolve_model_dir(model: str | Path | None) -> Path:
    """The model folder: ``model``; the shipped default model when None; a model packaged beside it when ``model``
    is its bare name (e.g. ``mine_unet_world``) and no such local folder exists."""
    if model in (None, ""):
        return shipped_model_dir()
    packaged = shipped_model_dir().parent / str(model)
    if Path(model).name == str(model) and not Path(model).exists() and (packaged / CARD).is_file():
        return packaged
    return Path(model)


def read_card(model: str | Path | None) -> ModelCard:
    """Read and validate the card of a model folder (None: the shipped model).

    Raises
    ------
    MtgError
        When the folder, the card or the weights are missing, or a card field is invalid (named).
    """
    folder = resolve_model_dir(model)
    path = folder / CARD
    if not path.is_file():
        raise MtgError(f"model folder {folder} has no {CARD} (a model folder holds {WEIGHTS} and {CARD}, as "
                       "written by mtg train)")
    try:
        card = ModelCard.model_validate(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise MtgError(f"{path} is not valid JSON: {err}") from None
    except ValidationError as err:
        raise MtgError(f"{path}: {format_validation_error(err)}") from None
    n_channels = len(card.inputs.bands) + len(card.inputs.indices)
    if not len(card.inputs.mean) == len(card.inputs.std) == n_channels == card.architecture.in_channels:
        raise MtgError(f"{path}: inputs.mean, inputs.std and architecture.in_channels must all match the "
                       f"{n_channels} input channels (bands + indices)")
    if len(card.classes) != card.architecture.n_classes:
        raise MtgError(f"{path}: {len(card.classes)} classes but architecture.n_classes = "
                       f"{card.architecture.n_classes}")
    if not (folder / card.weights).is_file():
        raise MtgError(f"model folder {folder} has no weights file {card.weights}")
    return card


def save_model(module: Any, card: ModelCard, out: str | Path) -> Path:
    """Write the weights and card of a model into the folder ``out``, replacing it as a whole.

    The folder is written under a temporary name beside ``out`` and renamed, so ``out`` never holds a weights
    file without its card.
    """
    import torch

    out = Path(out).resolve()
    with atomic_folder(out) as tmp:
        tmp.mkdir()
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, tmp / card.weights)
        (tmp / CARD).write_text(card.model_dump_json(indent=2) + "\n")
    load_model.cache_clear()  # a copy loaded from the old folder is stale now
    return out


class LoadedModel:
    """A model ready for inference on one device: the network in eval mode, its card and its normalisation."""

    def __init__(self, folder: Path, device: str) -> None:
        import torch
        from mtg.pipeline.unet import UNet

        self.folder = folder
        self.card = read_card(folder)
        self.device = torch.device(device)
        arch = self.card.architecture
        net = UNet(arch.in_channels, arch.n_classes, arch.widths, arch.norm)
        try:
            state = torch.load(folder / self.card.weights, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (RuntimeError, OSError, KeyError) as err:
            raise MtgError(f"cannot load the weights {folder / self.card.weights}: {err}") from None
        self.net = net.eval().to(self.device, memory_format=torch.channels_last)
        self.multiple = net.multiple
        self.mean = np.asarray(self.card.inputs.mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(self.card.inputs.std, dtype=np.float32)[:, None, None]
        self.gpu_batch: int | None = None  # tiles per forward pass on a GPU (batch_size)

    def batch_size(self, requested: int, tile: int) -> int:
        """Tiles per forward pass: ``requested`` on the CPU; on a GPU, as many as fit in half of its free memory
        by :func:`activation_bytes` (at most :data:`MAX_GPU_BATCH`), lowered for good after an out-of-memory
        error (:meth:`predict`)."""
        if self.device.type != "cuda":
            return requested
        if self.gpu_batch is None:
            import torch

            free, _ = torch.cuda.mem_get_info(self.device)
            self.gpu_batch = int(np.clip(free // 2 // activation_bytes(self.card, tile), 1, MAX_GPU_BATCH))
            log.info("segmenting %d tiles of %d px per forward pass on %s (%.1f GB free)", self.gpu_batch, tile,
                     self.device, free / 1e9)
        return self.gpu_batch

    def predict(self, tiles: np.ndarray, batch: int) -> np.ndarray:
        """Class probabilities of raw input tiles.

        An out-of-memory error halves the batch and tries again (the lower batch is kept for later calls); on a
        GPU that runs out of memory with one tile per pass, the tiles go to this process's CPU copy of the model
        instead, with a warning.

        Parameters
        ----------
        tiles : numpy.ndarray
            ``(n, channels, tile, tile)`` unnormalised channels; NaN (never clear) becomes the channel mean.
        batch : int
            Tiles per forward pass.

        Returns
        -------
        numpy.ndarray
            ``(n, classes, tile, tile)`` float32 softmax probabilities.

        Raises
        ------
        MtgError
            When the CPU runs out of memory with one tile per pass.
        """
        import torch

        x = np.nan_to_num((tiles - self.mean) / self.std, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        while True:
            try:
                return self._forward(x, batch)
            except torch.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if batch > 1:
                    batch = batch // 2
                    if self.device.type == "cuda":
                        self.gpu_batch = batch
                    log.warning("out of memory on %s: segmenting %d tiles per forward pass from now on", self.device,
                                batch)
                    continue
                if self.device.type == "cuda":
                    log.warning("out of GPU memory with one tile per forward pass: %s segments on its CPU",
                                "this worker")
                    return load_model(str(self.folder), "cpu").predict(tiles, 1)
                raise MtgError(f"out of memory segmenting one {x.shape[-1]} px tile on the CPU: give the workers "
                               "more memory or use a smaller segment.tile") from None

    def _forward(self, x: np.ndarray, batch: int) -> np.ndarray:
        """Softmax of the network over normalised tiles, ``batch`` at a time."""
        import torch

        cuda = self.device.type == "cuda"
        out = []
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            for start in range(0, len(x), batch):
                t = torch.from_numpy(x[start:start + batch]).to(self.device, memory_format=torch.channels_last,
                                                                non_blocking=cuda)
                out.append(torch.softmax(self.net(t).float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, len(self.card.classes), *x.shape[2:]), np.float32)


#: Most tiles in one forward pass on a GPU, however much memory is free.
MAX_GPU_BATCH = 256


def activation_bytes(card: ModelCard, tile: int) -> int:
    """An upper estimate of the GPU memory one tile takes in a float16 forward pass of the U-Net: at each level,
    four feature maps of that level's width (two encoder convolutions, the skip kept for the decoder, the
    decoder's convolution) at that level's resolution, 2 bytes a value, plus the float32 input and output."""
    arch = card.architecture
    levels = sum(4 * width * (tile // 2 ** level) ** 2 * 2 for level, width in enumerate(arch.widths))
    return int(levels + 4 * tile * tile * (arch.in_channels + arch.n_classes))


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=4)
def load_model(model: str | None, device: str) -> LoadedModel:
    """The model of folder ``model`` (None: the shipped one) on ``device``, loaded once per process.

    Dask workers call this in every task; the cache makes that one load per worker process.
    """
    return LoadedModel(resolve_model_dir(model).resolve(), device)
