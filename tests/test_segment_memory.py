"""Segmentation under memory pressure: an out-of-memory error halves the batch and the probabilities stay the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtg.pipeline.errors import MtgError
from mtg.pipeline.model_store import activation_bytes, load_model


class _Limited(torch.nn.Module):
    """The network, but failing like a full device whenever a pass holds more than ``most`` tiles."""

    def __init__(self, net: torch.nn.Module, most: int) -> None:
        super().__init__()
        self.net, self.most, self.passes = net, most, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes.append(len(x))
        if len(x) > self.most:
            raise torch.OutOfMemoryError(f"injected: {len(x)} tiles do not fit")
        return self.net(x)


@pytest.fixture
def model():
    from mtg.pipeline.model_store import LoadedModel, resolve_model_dir

    return LoadedModel(resolve_model_dir(None).resolve(), "cpu")  # a fresh copy: the cached one stays untouched


def _tiles(model, n: int = 6, tile: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    mean, std = model.mean, model.std
    return (mean + std * rng.normal(size=(n, len(mean), tile, tile))).astype(np.float32)


def test_out_of_memory_halves_the_batch_and_gives_the_same_probabilities(model, caplog):
    tiles = _tiles(model)
    expected = model.predict(tiles, 1)
    model.net = _Limited(model.net, most=2)
    with caplog.at_level("WARNING"):
        got = model.predict(tiles, 8)
    assert model.net.passes == [6, 4, 2, 2, 2]  # all six tiles, then passes of 4, then of 2
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)  # same tiles, other batch composition
    assert "2 tiles per forward pass" in caplog.text


def test_out_of_memory_with_one_tile_on_the_cpu_is_one_clear_error(model):
    model.net = _Limited(model.net, most=0)
    with pytest.raises(MtgError, match="out of memory segmenting one 64 px tile on the CPU"):
        model.predict(_tiles(model, n=2), 4)


def test_gpu_batch_estimate_grows_with_free_memory_and_shrinks_with_the_tile():
    card = load_model(None, "cpu").card
    small, large = activation_bytes(card, 128), activation_bytes(card, 256)
    assert 3.9 < large / small < 4.1  # memory scales with the tile's area
    assert large > 256 * 256 * 4 * card.architecture.in_channels  # more than the input itself
