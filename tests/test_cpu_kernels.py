"""What the generic op tests do not reach in the C++ CPU kernels (csrc/cpu): several lane groups
of 8 channels with a partial last one, the chunked backward recompute at d_state > 1, SLP with
several attribute tiles, determinism, and the kernel ops' own argument checks."""

import pytest
import torch
from inputs import check_against_reference, scan_inputs, slp_inputs, ss2d_inputs, to

import zeromamba

pytestmark = pytest.mark.skipif(
    not zeromamba.available_backends()["cpu"].available, reason="CPU kernels not built"
)


@pytest.mark.parametrize("channel_last", [False, True])
def test_ss2d_scan_several_lane_groups(channel_last):
    """C = 19: two full groups of 8 channels and a partial one, in both layouts."""
    kw = ss2d_inputs(2, 19, 5, 6, 2, channel_last=channel_last, seed=7)
    for dtype in (torch.float64, torch.float32):
        check_against_reference("ss2d_scan", "cpu", kw, dtype)


def test_selective_scan_groups_wider_than_a_lane_group():
    """d / G = 10 channels per group: each group spans two lane groups."""
    kw = scan_inputs(2, 20, 17, 4, 2, seed=5)
    check_against_reference("selective_scan", "cpu", kw, torch.float64)


def test_selective_scan_chunked_backward():
    """L = 1500 with N = 16 exceeds one backward recompute chunk (~960 steps at N = 16), so the
    chunk-start states and the carry of dh across chunks are exercised."""
    kw = scan_inputs(1, 3, 1500, 16, 1, seed=2)
    check_against_reference("selective_scan", "cpu", kw, torch.float64)


def test_slp_project_several_tiles():
    """A = 300 attribute rows: three score tiles of 128 rows, the last one partial; b = 5 batch
    rows split over the threads' dq partials."""
    kw = slp_inputs(5, 300, 24, 13, seed=4)
    for dtype in (torch.float64, torch.float32):
        check_against_reference("slp_project", "cpu", kw, dtype)


def test_backward_is_deterministic():
    kw = to(ss2d_inputs(2, 12, 6, 5, 1, seed=1), torch.float32)
    args = [kw[k] for k in ("x", "delta", "A", "B", "C", "D", "delta_bias")]
    dy = torch.randn_like(kw["x"])
    first = torch.ops.zeromamba.ss2d_scan_bwd(dy, *args, True, False)
    second = torch.ops.zeromamba.ss2d_scan_bwd(dy, *args, True, False)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_kernel_ops_check_their_arguments():
    """C++ callers reach the kernel ops without the Python checks; bad shapes still raise."""
    kw = ss2d_inputs(1, 2, 3, 4, 2)
    args = [kw[k] for k in ("x", "delta", "A", "B", "C", "D", "delta_bias")]
    bad_B = args[3][..., :3]
    with pytest.raises(RuntimeError, match="B must have shape"):
        torch.ops.zeromamba.ss2d_scan_fwd(*args[:3], bad_B, *args[4:], True, False, False)
    with pytest.raises(RuntimeError, match="A must be float32"):
        torch.ops.zeromamba.ss2d_scan_fwd(
            args[0].float(),
            args[1].float(),
            args[2].half(),
            *[a.float() for a in args[3:5]],
            None,
            None,
            True,
            False,
            False,
        )
    s = scan_inputs(1, 4, 5, 2, 2)
    with pytest.raises(RuntimeError, match="d_state N"):
        torch.ops.zeromamba.selective_scan_fwd(
            s["u"],
            s["delta"],
            torch.zeros(4, 17, dtype=torch.float64),
            s["B"],
            s["C"],
            None,
            None,
            False,
            False,
        )
    slp = slp_inputs(2, 3, 6, 5)
    with pytest.raises(RuntimeError, match="q2 must have shape"):
        torch.ops.zeromamba.slp_project_fwd(slp["feat"], slp["q1"], slp["q2"][:2])
