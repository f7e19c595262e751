"""The Triton slp_project's split paths (docs/design.md §4.8): the forward's R splits merged by
torch, including a split whose last R-tile lies past R, and the dq kernel's batch splits,
including a split that runs past the batch; no atomics, so the gradients repeat bitwise."""

import pytest
import torch
from inputs import DEVICES, check_against_reference, slp_inputs, to

import zeromamba
from zeromamba import ops

if "cpu" not in zeromamba.available_backends()["triton"].devices and not torch.cuda.is_available():
    pytest.skip("the triton backend is not available here", allow_module_level=True)

from zeromamba.kernels import slp_project as slp_kernels

DEVICE = DEVICES[-1]


@pytest.fixture
def small_splits(monkeypatch):
    # R = 150 is 5 R-tiles of 32: 2 splits of 3 tiles, the second's last tile (160..191) past R.
    monkeypatch.setattr(slp_kernels, "MAX_R_SPLITS", 2)
    # one (A block, F block) wants 2 programs: b = 3 runs as 2 splits of 2 batches, the second
    # running one batch past the end.
    monkeypatch.setattr(slp_kernels, "TARGET_PROGRAMS", 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_split_paths_against_reference(small_splits, dtype):
    kw = to(slp_inputs(3, 20, 40, 150, seed=5), device=DEVICE)
    check_against_reference("slp_project", "triton", kw, dtype)


def test_gradients_repeat_bitwise(small_splits):
    kw = to(slp_inputs(3, 20, 40, 150, seed=6), torch.float32, DEVICE)
    dout = torch.randn(3, 20, device=DEVICE)
    runs = [slp_kernels.slp_project_bwd(dout, kw["feat"], kw["q1"], kw["q2"]) for _ in range(2)]
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
    y = ops.slp_project(**kw, backend="triton")
    assert y.shape == (3, 20) and torch.isfinite(y).all()
