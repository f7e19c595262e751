"""Bad input names the argument; backend choice is explicit and never falls back silently."""

import re

import pytest
import torch
from inputs import scan_inputs, slp_inputs, ss2d_inputs

import zeromamba
from zeromamba import backends, ops


def _call(op, kw, **changes):
    return getattr(ops, op)(**{**kw, **changes}, backend="reference")


SS2D = ss2d_inputs(1, 2, 3, 4, 2)
SS2D_CL = ss2d_inputs(1, 2, 3, 4, 2, channel_last=True)
SCAN = scan_inputs(1, 4, 5, 2, 2)
SCAN32 = scan_inputs(1, 4, 5, 2, 2, dtype=torch.float32)
SLP = slp_inputs(2, 3, 6, 5)


@pytest.mark.parametrize(
    "op,kw,changes,pattern",
    [
        ("ss2d_scan", SS2D, {"x": SS2D["x"][0]}, r"x must have shape \(b, C, H, W\)"),
        ("ss2d_scan", SS2D, {"delta": SS2D["delta"][:, :3]}, r"delta must have shape"),
        ("ss2d_scan", SS2D, {"A": SS2D["A"][:4]}, r"A must have shape \(4C, N\)"),
        (
            "ss2d_scan",
            SS2D,
            {"A": torch.zeros(8, 17, dtype=torch.float64)},
            r"d_state N = A.shape\[1\] must be in 1..16, got 17",
        ),
        ("ss2d_scan", SS2D, {"B": SS2D["B"][..., :3]}, r"B must have shape \(b, 4, N, H, W\)"),
        ("ss2d_scan", SS2D, {"C": SS2D["C"][:, :, :1]}, r"C must have shape"),
        ("ss2d_scan", SS2D, {"D": SS2D["D"][:3]}, r"D must have shape \(4C,\)"),
        ("ss2d_scan", SS2D, {"delta_bias": SS2D["delta_bias"][:3]}, r"delta_bias must have shape"),
        ("ss2d_scan", SS2D, {"delta": SS2D["delta"].float()}, r"delta must have the dtype of x"),
        ("ss2d_scan", SS2D, {"x": SS2D["x"].int()}, r"x must be float32, float16"),
        (
            "ss2d_scan",
            SS2D_CL,
            {"B": SS2D_CL["B"].transpose(2, 4)},
            r"B must have shape \(b, 4, H, W, N\) \[channel_last\]",
        ),
        (
            "selective_scan",
            SCAN,
            {"B": SCAN["B"][:, :, :, :4]},
            r"B must have shape \(b, G, N, L\)",
        ),
        (
            "selective_scan",
            SCAN,
            {"B": torch.zeros(1, 3, 2, 5, dtype=torch.float64)},
            r"G = 3 groups, which must divide d = 4",
        ),
        (
            "selective_scan",
            SCAN32,
            {"A": SCAN32["A"].half()},
            r"A must be torch.float32, got torch.float16",
        ),
        ("slp_project", SLP, {"q1": SLP["q1"][:, :5]}, r"q1 must have shape \(A, F\) with F"),
        ("slp_project", SLP, {"q2": SLP["q2"][:2]}, r"q2 must have shape \(A, F\)"),
        ("slp_project", SLP, {"feat": SLP["feat"][0]}, r"feat must have shape \(b, F, R\)"),
    ],
)
def test_bad_input_names_the_argument(op, kw, changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        _call(op, kw, **changes)


def test_device_mismatch_is_named():
    meta = {**SS2D, "B": SS2D["B"].to("meta")}
    with pytest.raises(ValueError, match=r"B is on meta but x is on cpu"):
        _call("ss2d_scan", meta)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match=r"backend must be one of"):
        ops.ss2d_scan(**SS2D, backend="fast")


def test_env_backend_is_honoured_and_checked(monkeypatch):
    monkeypatch.setenv("ZEROMAMBA_BACKEND", "reference")
    assert backends.resolve(None, torch.device("cpu")) == "reference"
    monkeypatch.setenv("ZEROMAMBA_BACKEND", "nope")
    with pytest.raises(ValueError, match=r"ZEROMAMBA_BACKEND must be one of"):
        ops.ss2d_scan(**SS2D)


def test_forced_backend_that_cannot_run_raises():
    """No silent fallback: a backend that cannot take these tensors says why."""
    for name, info in zeromamba.available_backends().items():
        if "cpu" not in info.devices:
            with pytest.raises(
                RuntimeError, match=re.escape(f"backend {name!r} cannot run on cpu")
            ):
                ops.ss2d_scan(**SS2D, backend=name)


def test_default_backend_is_the_fastest_available():
    info = zeromamba.available_backends()
    expected = "cpu" if info["cpu"].available else "reference"
    assert backends.resolve(None, torch.device("cpu")) == expected
    assert info["reference"].available and info["reference"].reason == ""
    for item in info.values():
        assert item.available or item.reason, f"{item.name} is unavailable without a reason"
