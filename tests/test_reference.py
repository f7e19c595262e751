"""The reference against the definitions of docs/design.md §2, written out independently here."""

import math

import torch
from hypothesis import given
from hypothesis import strategies as st
from inputs import rel_err, scan_inputs, slp_inputs, ss2d_inputs

from zeromamba import ops, reference

maps = st.tuples(st.integers(1, 5), st.integers(1, 6))


@given(hw=maps, c=st.integers(1, 3))
def test_cross_scan_matches_the_four_index_formulas(hw, c):
    H, W = hw
    L = H * W
    x = torch.randn(2, c, H, W, dtype=torch.float64)
    xs = reference.cross_scan(x)
    for h in range(H):
        for w in range(W):
            for k, t in enumerate([h * W + w, w * H + h, L - 1 - (h * W + w), L - 1 - (w * H + h)]):
                assert torch.equal(xs[:, k, :, t], x[:, :, h, w])
    assert torch.equal(ops.cross_scan(x), xs)


@given(hw=maps)
def test_cross_merge_is_the_adjoint_of_cross_scan(hw):
    H, W = hw
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    ys = torch.randn(2, 4, 3, H * W, dtype=torch.float64)
    lhs = (reference.cross_scan(x) * ys).sum()
    rhs = (x * reference.cross_merge(ys, H, W)).sum()
    torch.testing.assert_close(lhs, rhs)
    torch.testing.assert_close(ops.cross_merge(ys, H, W), reference.cross_merge(ys, H, W))


def test_selective_scan_recurrence_by_hand():
    """One channel, N = 1, two steps, numbers worked out on paper."""
    u = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    delta = torch.tensor([[[0.5, 1.0]]], dtype=torch.float64)
    A = torch.tensor([[-1.0]], dtype=torch.float64)
    B = torch.tensor([[[[2.0, 1.0]]]], dtype=torch.float64)
    C = torch.tensor([[[[1.0, 3.0]]]], dtype=torch.float64)
    D = torch.tensor([0.5], dtype=torch.float64)
    y = reference.selective_scan(u, delta, A, B, C, D)
    h0 = 0.5 * 2.0 * 1.0
    h1 = math.exp(-1.0) * h0 + 1.0 * 1.0 * 2.0
    expected = torch.tensor([1.0 * h0 + 0.5 * 1.0, 3.0 * h1 + 0.5 * 2.0], dtype=torch.float64)
    torch.testing.assert_close(y[0, 0], expected)


@given(G=st.sampled_from([1, 2]), N=st.sampled_from([1, 2, 4]), L=st.integers(1, 9))
def test_selective_scan_groups_and_softplus(G, N, L):
    """Channel c reads group c // (d // G); softplus(dt) is the identity above 20."""
    kw = scan_inputs(2, 4, L, N, G)
    y = reference.selective_scan(**kw)
    for c in range(4):
        g = c // (4 // G)
        one = {
            **kw,
            "u": kw["u"][:, c : c + 1],
            "delta": kw["delta"][:, c : c + 1],
            "A": kw["A"][c : c + 1],
            "B": kw["B"][:, g : g + 1],
            "C": kw["C"][:, g : g + 1],
            "D": kw["D"][c : c + 1],
            "delta_bias": kw["delta_bias"][c : c + 1],
        }
        torch.testing.assert_close(reference.selective_scan(**one), y[:, c : c + 1])
    big = {**kw, "delta": kw["delta"] + 30.0}
    raw = {
        **big,
        "delta": big["delta"] + big["delta_bias"][:, None],
        "delta_bias": None,
        "delta_softplus": False,
    }
    torch.testing.assert_close(reference.selective_scan(**big), reference.selective_scan(**raw))


@given(hw=maps, N=st.sampled_from([1, 2]), channel_last=st.booleans())
def test_ss2d_scan_is_the_unfused_pipeline(hw, N, channel_last):
    """ss2d_scan == cross_merge(selective_scan(cross_scan(.)) with per-direction inputs)."""
    H, W = hw
    kw = ss2d_inputs(2, 3, H, W, N, channel_last=channel_last)
    y = reference.ss2d_scan(**kw)
    cf = ss2d_inputs(2, 3, H, W, N)  # same seed: the channel-first version of the same data
    b, c, L = 2, 3, H * W
    direction = [lambda t, k=k: ops.cross_scan(t[:, k])[:, k] for k in range(4)]
    us = ops.cross_scan(cf["x"]).reshape(b, 4 * c, L)
    deltas = torch.cat([direction[k](cf["delta"]) for k in range(4)], 1)
    Bs = torch.stack([direction[k](cf["B"]) for k in range(4)], 1)
    Cs = torch.stack([direction[k](cf["C"]) for k in range(4)], 1)
    ys = reference.selective_scan(us, deltas, cf["A"], Bs, Cs, cf["D"], cf["delta_bias"], True)
    expected = ops.cross_merge(ys.view(b, 4, c, L), H, W)
    if channel_last:
        expected = expected.permute(0, 2, 3, 1)
    torch.testing.assert_close(y, expected)


def test_slp_project_is_zeromamba_slp():
    """The fused form equals the paper's: A = softmax(q1 feat), F_p = A feat^T, out = q2 . F_p."""
    kw = slp_inputs(3, 5, 16, 7)
    attn = torch.softmax(kw["q1"] @ kw["feat"], dim=-1)  # (b, A, R)
    pooled = attn @ kw["feat"].transpose(1, 2)  # (b, A, F)
    expected = (pooled * kw["q2"]).sum(-1)
    assert rel_err(reference.slp_project(**kw), expected) < 1e-12


def test_reference_gradcheck():
    kw = scan_inputs(1, 2, 5, 2, 1)
    args = [kw[k].requires_grad_() for k in ("u", "delta", "A", "B", "C", "D", "delta_bias")]
    assert torch.autograd.gradcheck(lambda *a: reference.selective_scan(*a, True), args)
    kw = ss2d_inputs(1, 2, 2, 3, 2)
    args = [kw[k].requires_grad_() for k in ("x", "delta", "A", "B", "C", "D", "delta_bias")]
    assert torch.autograd.gradcheck(lambda *a: reference.ss2d_scan(*a), args)
    kw = slp_inputs(2, 3, 6, 4)
    args = [kw[k].requires_grad_() for k in ("feat", "q1", "q2")]
    assert torch.autograd.gradcheck(reference.slp_project, args)


def test_out_float32_keeps_half_inputs_in_float32():
    kw = ss2d_inputs(1, 2, 3, 3, 1, dtype=torch.bfloat16)
    assert reference.ss2d_scan(**kw).dtype == torch.bfloat16
    assert reference.ss2d_scan(**kw, out_float32=True).dtype == torch.float32
