"""zeromamba.compat.mamba.selective_scan_fn against an independent loop written here: z gating,
last state, (b, N, L) / (b, G, N, L) / constant (d, N) B and C, N in {1, 16, 64, 256}, forward
and backward, on every backend; plus opcheck and torch.compile of the wide-N op."""

import pytest
import torch
import torch.nn.functional as F
from inputs import backend_params, rel_err

from zeromamba import ops
from zeromamba.compat.mamba import selective_scan_fn

BACKENDS = backend_params(include_reference=True)


def loop_scan(u, delta, A, B, C, D, z, delta_bias, softplus):
    """The S6 recurrence written out step by step, with B/C looked up per channel: the plainest
    statement of mamba_ssm's semantics. Returns (out, last state)."""
    b, d, L = u.shape

    def per_channel(M):  # -> (b, d, N, L)
        if M.dim() == 2:  # constant (d, N)
            return M[None, :, :, None].expand(b, d, M.shape[1], L)
        if M.dim() == 3:  # (b, N, L): every channel
            return M[:, None].expand(b, d, *M.shape[1:])
        group = torch.arange(d) // (d // M.shape[1])  # channel c reads group c // (d // G)
        return M[:, group]

    Bc, Cc = per_channel(B), per_channel(C)
    dt = delta + (delta_bias[:, None] if delta_bias is not None else 0)
    dt = F.softplus(dt) if softplus else dt
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(L):
        h = (
            torch.exp(dt[:, :, t, None] * A) * h
            + (dt[:, :, t] * u[:, :, t])[..., None] * Bc[..., t]
        )
        y = (Cc[..., t] * h).sum(-1)
        if D is not None:
            y = y + D * u[:, :, t]
        if z is not None:
            y = y * F.silu(z[:, :, t])
        ys.append(y)
    return torch.stack(ys, -1), h


def make_inputs(form, b, d, L, N, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    bc = {"3d": (b, N, L), "4d": (b, 2, N, L), "const": (d, N)}[form]
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32
    return {
        "u": r(b, d, L),
        "delta": r(b, d, L, scale=0.5),
        "A": (-torch.exp(r(d, N, scale=0.5))).to(pdtype),
        "B": r(*bc) if form != "const" else r(*bc).to(pdtype),
        "C": r(*bc) if form != "const" else r(*bc).to(pdtype),
        "D": r(d).to(pdtype),
        "z": r(b, d, L),
        "delta_bias": r(d, scale=0.1).to(pdtype),
    }


CASES = [(N, form) for N in (1, 16, 64, 256) for form in ("3d", "4d", "const")]


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("N,form", CASES)
def test_against_loop(device, backend, N, form):
    if backend == "triton" and (N, form) not in ((1, "3d"), (16, "4d")):
        pytest.skip("the interpreted triton backend runs a subset (speed); the rest are slow tests")
    check_against_loop(device, backend, N, form)


@pytest.mark.slow
@pytest.mark.parametrize("device,backend", [p for p in BACKENDS if p[1] == "triton"])
def test_against_loop_triton_64_states(device, backend):
    """N = 64 (4 state chunks) on the interpreted Triton backend, constant B/C."""
    check_against_loop(device, backend, 64, "const")


def check_against_loop(device, backend, N, form):
    dtype = torch.float64 if backend in ("reference", "cpu") else torch.float32
    b, d, L = 2, 4, 5
    kw = make_inputs(form, b, d, L, N, dtype, seed=N)
    kw = {k: v.to(device).requires_grad_(True) for k, v in kw.items()}
    weight = torch.randn(b, d, N, dtype=torch.float64, device=device)

    out, last = selective_scan_fn(
        **kw, delta_softplus=True, return_last_state=True, backend=backend
    )
    assert out.dtype == dtype and out.shape == (b, d, L)
    assert last.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert last.shape == (b, d, N)
    # the loss reaches the last state too: its gradient flows (mamba_ssm drops it)
    loss = (out.double() * out.double().detach().sin()).sum() + (last.double() * weight).sum()
    grads = torch.autograd.grad(loss, list(kw.values()))

    ref_kw = {k: v.detach().double().requires_grad_(True) for k, v in kw.items()}
    ref_out, ref_last = loop_scan(**ref_kw, softplus=True)
    ref_loss = (ref_out * ref_out.detach().sin()).sum() + (ref_last * weight).sum()
    ref_grads = torch.autograd.grad(ref_loss, list(ref_kw.values()))

    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert rel_err(out, ref_out) < tol
    assert rel_err(last, ref_last) < tol
    for name, g, rg in zip(kw, grads, ref_grads):
        assert torch.isfinite(g).all(), name
        assert rel_err(g, rg) < tol, name


@pytest.mark.parametrize("z,last", [(False, False), (True, False), (False, True)])
def test_outputs_without_options(z, last):
    """No z: plain scan plus D u; no last state: a tensor, not a tuple."""
    kw = make_inputs("4d", 2, 4, 6, 3, torch.float64)
    z_t = kw.pop("z")
    res = selective_scan_fn(**kw, z=z_t if z else None, return_last_state=last)
    out = res[0] if last else res
    assert isinstance(res, tuple) == last
    ref_out, ref_last = loop_scan(**kw, z=z_t if z else None, softplus=False)
    torch.testing.assert_close(out, ref_out)
    if last:
        torch.testing.assert_close(res[1], ref_last)


def test_half_inputs_keep_dtype_and_gate_in_float32():
    kw = make_inputs("3d", 2, 8, 7, 4, torch.bfloat16)
    out, last = selective_scan_fn(**kw, delta_softplus=True, return_last_state=True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    ref_out, ref_last = loop_scan(
        **{k: v.double() for k, v in kw.items()}, softplus=True
    )  # fmt: skip
    assert rel_err(out, ref_out) < 1e-2
    assert rel_err(last, ref_last) < 1e-5  # the state is computed from the bf16 inputs in fp32


def test_positional_call_matches_mamba_ssm_order():
    """selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, last_state)."""
    kw = make_inputs("3d", 1, 2, 4, 2, torch.float64)
    args = [kw[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    out, last = selective_scan_fn(*args, True, True)
    ref_out, ref_last = loop_scan(**kw, softplus=True)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(last, ref_last)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda kw: kw.update(A=kw["A"].to(torch.complex64)), "complex A"),
        (lambda kw: kw.update(cu_seqlens=torch.tensor([0, 3])), "cu_seqlens"),
        (lambda kw: kw.update(B=kw["B"][0, 0]), "B must be"),
        (lambda kw: kw.update(z=kw["z"][:, :, :2]), "z must have u's shape"),
        (lambda kw: kw.update(C=torch.randn(3, 2)), "constant C must be"),
    ],
)
def test_errors_name_the_argument(change, match):
    kw = make_inputs("3d", 1, 2, 4, 2, torch.float32)
    change(kw)
    with pytest.raises(ValueError, match=match):
        selective_scan_fn(**kw)


def test_n_above_256_is_refused():
    kw = make_inputs("4d", 1, 2, 3, 257, torch.float32)
    with pytest.raises(ValueError, match="must be in 1..256"):
        selective_scan_fn(**kw)


@pytest.mark.slow
@pytest.mark.parametrize("device,backend", [p for p in BACKENDS if p[1] != "reference"])
def test_against_loop_n256_kernels(device, backend):
    """N = 256 (16 state chunks) on the kernel backends, 4-D B/C (the interpreter is slow)."""
    check_against_loop(device, backend, 256, "4d")


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_opcheck_wide_state_and_channel_groups(device, backend):
    """The op itself with N = 20 (two state chunks) and with one group per channel."""
    dtype = torch.float64 if backend in ("reference", "cpu") else torch.float32
    cases = ((2, 20),) if backend == "triton" else ((2, 20), (4, 3))  # interpreter: speed
    for G, N in cases:
        kw = make_inputs("4d", 2, 4, 5, N, dtype, seed=G)
        B = torch.randn(2, G, N, 5, dtype=dtype)
        C = torch.randn(2, G, N, 5, dtype=dtype)
        args = [kw["u"], kw["delta"], kw["A"], B, C, kw["D"], kw["delta_bias"]]
        args = [a.to(device).requires_grad_(True) for a in args]
        torch.library.opcheck(
            torch.ops.zeromamba.selective_scan.default, (*args, True, False, backend)
        )


def test_compile_fullgraph():
    """z gating, 3-D B/C, N > 16 and the last state compile into one graph, forward and
    backward, and match eager."""
    torch._dynamo.reset()
    kw = make_inputs("3d", 2, 4, 6, 20, torch.float32)
    kw = {k: v.requires_grad_(True) for k, v in kw.items()}

    def fn(**a):
        out, last = selective_scan_fn(**a, delta_softplus=True, return_last_state=True)
        return out.sum() + last.square().sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got = compiled(**kw)
    want = fn(**kw)
    torch.testing.assert_close(got, want)
    g_got = torch.autograd.grad(got, list(kw.values()))
    g_want = torch.autograd.grad(want, list(kw.values()))
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b)


def test_ops_selective_scan_api_unchanged():
    """zeromamba.ops.selective_scan keeps its keyword-only out_float32 / backend."""
    kw = make_inputs("4d", 1, 2, 3, 2, torch.bfloat16)
    y = ops.selective_scan(
        kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], kw["delta_bias"], True,
        out_float32=True, backend="reference",
    )  # fmt: skip
    assert y.dtype == torch.float32
