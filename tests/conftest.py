"""Shared fixtures: a tiny routing space, seeded RNG, closed figures, and the synthetic data set,
untrained tiny network and two-chain route of the records tests."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dynviz.model.config import RoutingSpaceConfig


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny test models gain nothing from intra-op threads, and spinning OpenMP threads slow
    them down many-fold on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_and_restore_rng():
    """Seed every RNG and restore the previous state afterwards (torchvision's leak guard)."""
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()  # noqa: NPY002 (guarding the legacy global RNG)
    py_state = random.getstate()
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002
    random.seed(0)
    yield
    torch.set_rng_state(torch_state)
    np.random.set_state(np_state)  # noqa: NPY002
    random.setstate(py_state)


@pytest.fixture(autouse=True)
def _no_flush_denormal():
    """``dynviz record`` run in-process sets flush-to-zero for its process; undo it, or later
    tests see no subnormal floats (hypothesis refuses to draw floats then)."""
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture
def tiny() -> RoutingSpaceConfig:
    """L=4, base width 8, 4 scales, 4 classes (models/tiny.yaml)."""
    return RoutingSpaceConfig(name="tiny-test", num_layers=4, base_channels=8, num_classes=4)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64)


# ------------------------------------------------------------------ records tests (SPEC)
@pytest.fixture(scope="module")
def dataset(request):
    """The validation split of the requesting test module's ``SPEC`` (a synthetic data spec)."""
    from dynviz.data import build_dataset

    return build_dataset(request.module.SPEC, split="val")


@pytest.fixture(scope="module")
def model(dataset):
    """An untrained ``tiny`` network (seed 0) with the data set's classes, in eval mode."""
    import dynviz

    torch.manual_seed(0)
    return dynviz.build_model("tiny", num_classes=dataset.num_classes).eval()


@pytest.fixture(scope="module")
def two_chains(model):
    """A route of two chains through the model's space, named ``two-chains``."""
    from dynviz.model.route import Route

    chains = [[4, 8, 8, 16, 16], [4, 4, 4, 8, 8]]
    return Route.from_chains(model.config, chains, name="two-chains")
