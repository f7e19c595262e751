"""zeromamba.compat.vmamba: VMamba's selective_scan_fn signature, patch_vssm on our model and on a
stand-in for official SS2D modules, and the layout check that catches scan-ordered tensors
reshaped into ss2d_scan's spatial layout."""

import warnings

import pytest
import torch
from inputs import rel_err
from vmamba_standin import StandinSS2D, StandinVSSM

from zeromamba import layout_check, ops, reference
from zeromamba.compat import LayoutMismatch, compare_paths
from zeromamba.compat import vmamba as zv
from zeromamba.models import SS2D, vssm


def _run(model, x):
    """Output and gradients of the input and every parameter for a fixed output gradient."""
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    out = out[1] if isinstance(out, tuple) else out
    dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out, [x, *params], dy)
    return out.detach(), grads


def _assert_same(a, b, tol=1e-4):
    (ya, ga), (yb, gb) = a, b
    assert rel_err(ya, yb) <= tol
    for u, v in zip(ga, gb):
        assert rel_err(u, v) <= tol


# --------------------------------------------------------------------------- selective_scan_fn


def _scan_args(dtype=torch.float32, G=4, c=3, N=2, L=7):
    """VMamba's scan arguments: G = 4 B/C groups (one per direction) of c channels each."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(s, generator=g).to(dtype)
    return (
        r(2, G * c, L),
        r(2, G * c, L) * 0.5,
        -torch.rand(G * c, N, generator=g) - 0.5,
        r(2, G, N, L),
        r(2, G, N, L),
        torch.randn(G * c, generator=g),
        torch.randn(G * c, generator=g) * 0.1,
    )


def test_selective_scan_fn_positional_oflex():
    """VMamba calls selective_scan_fn(u, delta, A, B, C, D, delta_bias, softplus, oflex,
    backend=...); softplus defaults to True there."""
    args = _scan_args(torch.bfloat16)
    y32 = zv.selective_scan_fn(*args, True, True)
    y16 = zv.selective_scan_fn(*args, True, False)
    assert y32.dtype == torch.float32 and y16.dtype == torch.bfloat16
    torch.testing.assert_close(y32, ops.selective_scan(*args, True, out_float32=True))
    torch.testing.assert_close(zv.selective_scan_fn(*args), y32)  # softplus=True, oflex=True


def test_selective_scan_fn_backend_names(monkeypatch):
    monkeypatch.setattr(zv, "_noted", set())
    args = _scan_args()
    want = ops.selective_scan(*args, True)
    with pytest.warns(UserWarning, match="VMamba backend 'oflex' ignored"):
        torch.testing.assert_close(zv.selective_scan_fn(*args, True, True, "oflex"), want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per name
        zv.selective_scan_fn(*args, True, True, "oflex")
        zv.selective_scan_fn(*args, True, True, "reference")  # ours pass through, silently
    with pytest.raises(ValueError, match="backend must be None"):
        zv.selective_scan_fn(*args, True, True, "fast")


def test_scan_to_spatial_inverts_the_scan_orders():
    b, X, H, W = 2, 3, 4, 5
    t = torch.randn(b, 4, X, H, W)
    scan_ordered = torch.stack([reference._direction(t, k) for k in range(4)], 1)  # (b,4,X,L)
    torch.testing.assert_close(zv.scan_to_spatial(scan_ordered, H, W), t)
    with pytest.raises(ValueError, match="H\\*W = 20"):
        zv.scan_to_spatial(scan_ordered[..., :-1], H, W)


# --------------------------------------------------------------------------- patch_vssm


def test_patch_our_model_in_place():
    torch.manual_seed(0)
    model = vssm("nano", pipeline="unfused")
    x = torch.randn(2, 3, 32, 32)
    before = _run(model, x)
    names = zv.patch_vssm(model)
    assert names == [n for n, m in model.named_modules() if isinstance(m, SS2D)]
    assert {m.pipeline for m in model.ss2d_modules()} == {"fused"}
    _assert_same(_run(model, x), before)


@pytest.mark.parametrize("channel_first", [True, False])
@pytest.mark.parametrize("no_einsum", [True, False])
def test_patch_official_style_model(channel_first, no_einsum):
    torch.manual_seed(0)
    model = StandinVSSM(channel_first=channel_first, no_einsum=no_einsum, d_state=2)
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 12, 20)
    before = _run(model, x)
    names = zv.patch_vssm(model)
    assert names == ["blocks1.0", "blocks1.1", "blocks2.0"]
    for n in names:
        assert getattr(model.get_submodule(n).forward_core, "zeromamba_fused", False)
    assert list(model.state_dict()) == keys  # nothing added or renamed
    after = _run(model, x)
    _assert_same(after, before)
    assert zv.patch_vssm(model) == names  # idempotent
    _assert_same(_run(model, x), after, tol=0)


def test_patched_official_core_keeps_bound_options():
    """ssoflex=False with bf16 activations (eval: in training VMamba then forces fp32): the scan
    returns bf16, like the original."""
    m = StandinSS2D(8, d_state=1, ssoflex=False).to(torch.bfloat16).eval()
    x = torch.randn(1, 8, 3, 5).to(torch.bfloat16)
    want = m(x)
    zv.patch_vssm(m, verify=False)
    got = m(x)
    assert got.dtype == torch.bfloat16
    assert rel_err(got.float(), want.float()) < 2e-2


def test_patch_refuses_what_has_no_fused_form():
    m = StandinSS2D(8, scan_mode="unidi")
    with pytest.raises(ValueError, match="scan_mode='unidi'"):
        zv.patch_vssm(m)
    with pytest.raises(ValueError, match="no SS2D module"):
        zv.patch_vssm(torch.nn.Linear(2, 2))


def test_original_core_that_cannot_run_is_reported():
    m = StandinSS2D(8, selective_scan_backend="fast")  # our selective_scan_fn refuses "fast"
    original = m.forward_core
    with pytest.raises(RuntimeError, match="cannot run here to verify"):
        zv.patch_vssm(m)
    assert m.forward_core is original


# --------------------------------------------------------------------------- the layout mistake


def _mistaken_official_core(m, backend, x, **kw):
    """The silent mistake: projections of the scan-ordered copies, merely reshaped to the
    spatial layout ss2d_scan takes."""
    b, d, H, W = x.shape
    N, R = m.A_logs.shape[1], m.dt_projs_weight.shape[2]
    x_dbl = torch.einsum("bkdl,kcd->bkcl", ops.cross_scan(x), m.x_proj_weight)
    dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, m.dt_projs_weight)
    y = ops.ss2d_scan(
        x, dts.reshape(b, 4, d, H, W), -torch.exp(m.A_logs.float()),
        Bs.reshape(b, 4, N, H, W), Cs.reshape(b, 4, N, H, W), m.Ds.float(),
        m.dt_projs_bias.reshape(-1).float(), True, out_float32=True,
    )  # fmt: skip
    if not m.channel_first:
        y = y.permute(0, 2, 3, 1)
    return m.out_norm(y).to(x.dtype)


def _mistaken_scan_fused(self, x):
    b, d, H, W = x.shape
    delta, B, C = self._dt_B_C(torch.matmul(self.x_proj_weight, ops.cross_scan(x)))
    A, D, bias = self._ssm_params(x.dtype)
    N = self.d_state
    return ops.ss2d_scan(
        x, delta.reshape(b, 4, d, H, W), A, B.reshape(b, 4, N, H, W),
        C.reshape(b, 4, N, H, W), D, bias, True, out_float32=True,
    )  # fmt: skip


def test_mistake_in_official_patch_is_caught_and_restored(monkeypatch):
    monkeypatch.setattr(zv, "_fused_core", _mistaken_official_core)
    model = StandinVSSM()
    originals = [m.forward_core for m in (*model.blocks1, *model.blocks2)]
    with pytest.raises(LayoutMismatch, match="scan order"):
        zv.patch_vssm(model)
    assert [m.forward_core for m in (*model.blocks1, *model.blocks2)] == originals


def test_mistake_in_our_model_is_caught_and_restored(monkeypatch):
    monkeypatch.setattr(SS2D, "_scan_fused", _mistaken_scan_fused)
    model = vssm("nano", pipeline="unfused")
    with pytest.raises(LayoutMismatch) as info:
        zv.patch_vssm(model)
    assert "dA_logs" in str(info.value)
    assert {m.pipeline for m in model.ss2d_modules()} == {"unfused"}


def test_check_layout_env(monkeypatch):
    """ZEROMAMBA_CHECK_LAYOUT=1: a fused SS2D compares itself with the unfused flow on its first
    input of each shape."""
    monkeypatch.setenv(layout_check.ENV, "1")
    x = torch.randn(1, 3, 32, 32)
    vssm("nano")(x)  # correct: passes
    monkeypatch.setattr(SS2D, "_scan_fused", _mistaken_scan_fused)
    with pytest.raises(LayoutMismatch):
        vssm("nano")(x)
    monkeypatch.setenv(layout_check.ENV, "0")
    vssm("nano")(x)  # off: silent, which is the point of the check


def test_compare_paths_helper():
    """The explicit helper for hand-written call sites: outputs equal at init are not enough."""
    m = StandinSS2D(16, d_state=1)
    x = torch.randn(2, m.d_inner, 3, 5)
    params = dict(m.named_parameters())
    errors = compare_paths(lambda t: zv._fused_core(m, None, t), m.forward_core, (x,), params)
    assert max(errors.values()) < 1e-4
    with pytest.raises(LayoutMismatch) as info:
        compare_paths(lambda t: _mistaken_official_core(m, None, t), m.forward_core, (x,), params)
    assert "dA_logs" in str(info.value)


def test_patched_module_compiles():
    torch._dynamo.reset()
    m = StandinSS2D(8, d_state=2)
    zv.patch_vssm(m)
    x = torch.randn(1, 8, 3, 5, requires_grad=True)
    fn = torch.compile(m, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(fn(x), m(x))
    fn(x).sum().backward()


def test_patched_model_pickles_and_copies():
    import copy
    import pickle

    model = StandinVSSM(d_state=1)
    zv.patch_vssm(model)
    x = torch.randn(1, 3, 8, 12)
    want = model(x)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        core = clone.blocks1[0].forward_core
        assert core.module is clone.blocks1[0]  # bound to the copy, not the original
        torch.testing.assert_close(clone(x), want)
