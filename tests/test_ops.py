"""Every op on every available backend against the float64 reference, forward and backward
(docs/design.md §6), plus opcheck, gradcheck and torch.compile."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from inputs import (
    backend_params,
    check_against_reference,
    noncontiguous,
    scan_inputs,
    slp_inputs,
    ss2d_inputs,
    to,
)

import zeromamba
from zeromamba import ops

BACKENDS = backend_params(include_reference=True)
states = st.sampled_from([1, 2, 4, 16])
# What both scan tests draw besides their shapes: the dtype (via data), batch, states, the
# optional parameters and strided inputs.
SCAN_DRAWS = {
    "data": st.data(),
    "b": st.integers(1, 2),
    "N": states,
    "with_D": st.booleans(),
    "with_bias": st.booleans(),
    "noncontig": st.booleans(),
}


def dtypes_for(device: str, backend: str) -> list[torch.dtype]:
    """What each backend is tested in: the reference in fp64; Triton's CPU interpreter has no
    half arithmetic; the CPU kernels take all four; CUDA has no fp64 path."""
    if backend == "reference":
        return [torch.float64]
    if backend == "triton" and device == "cpu":
        return [torch.float32]
    if device == "cuda":
        return [torch.float32, torch.float16, torch.bfloat16]
    return [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def _on(device, inputs, noncontig):
    moved = to(inputs, device=device)
    if noncontig:
        moved = {
            k: noncontiguous(v) if isinstance(v, torch.Tensor) and v.dim() > 1 else v
            for k, v in moved.items()
        }
    return moved


@pytest.mark.parametrize("device,backend", BACKENDS)
@given(
    G=st.sampled_from([1, 2]),
    per_group=st.integers(1, 3),
    L=st.one_of(st.just(1), st.integers(1, 40)),
    softplus=st.booleans(),
    **SCAN_DRAWS,
)
def test_selective_scan(
    device, backend, data, b, G, per_group, L, N, with_D, with_bias, softplus, noncontig
):
    dtype = data.draw(st.sampled_from(dtypes_for(device, backend)), label="dtype")
    kw = scan_inputs(
        b, G * per_group, L, N, G, with_D=with_D, with_bias=with_bias, softplus=softplus, seed=L
    )
    check_against_reference("selective_scan", backend, _on(device, kw, noncontig), dtype)


@pytest.mark.parametrize("device,backend", BACKENDS)
@given(
    c=st.integers(1, 4),
    H=st.integers(1, 7),
    W=st.integers(1, 7),
    channel_last=st.booleans(),
    **SCAN_DRAWS,
)
def test_ss2d_scan(
    device, backend, data, b, c, H, W, N, channel_last, with_D, with_bias, noncontig
):
    dtype = data.draw(st.sampled_from(dtypes_for(device, backend)), label="dtype")
    kw = ss2d_inputs(
        b, c, H, W, N, channel_last=channel_last, with_D=with_D, with_bias=with_bias, seed=H * 8 + W
    )
    check_against_reference("ss2d_scan", backend, _on(device, kw, noncontig), dtype)


@pytest.mark.parametrize("device,backend", [p for p in BACKENDS if p[1] != "reference"])
@pytest.mark.parametrize("channel_last", [False, True])
def test_ss2d_scan_out_float32(device, backend, channel_last):
    dtype = torch.bfloat16 if torch.bfloat16 in dtypes_for(device, backend) else torch.float32
    kw = _on(device, ss2d_inputs(2, 3, 5, 4, 1, channel_last=channel_last), False)
    check_against_reference("ss2d_scan", backend, kw, dtype, out_float32=True)
    y = ops.ss2d_scan(**to(kw, dtype), out_float32=True, backend=backend)
    assert y.dtype == torch.float32


@pytest.mark.parametrize("device,backend", [p for p in BACKENDS if p[1] != "reference"])
def test_ss2d_scan_large_map(device, backend):
    """The 448-px stage-1 map: L = 112 * 112 = 12544, every direction end to end."""
    if backend == "triton" and device == "cpu":
        pytest.skip("the 12544-long map runs for the triton backend on the GPU")
    dtype = dtypes_for(device, backend)[0 if device == "cpu" else 2]
    kw = _on(device, ss2d_inputs(1, 2, 112, 112, 1, seed=3), False)
    check_against_reference("ss2d_scan", backend, kw, dtype)


@pytest.mark.parametrize("device,backend", BACKENDS)
@given(
    data=st.data(),
    b=st.integers(1, 3),
    F=st.integers(1, 48),
    R=st.one_of(st.just(1), st.integers(1, 60)),
    A=st.integers(1, 24),
    noncontig=st.booleans(),
)
def test_slp_project(device, backend, data, b, F, R, A, noncontig):
    dtype = data.draw(st.sampled_from(dtypes_for(device, backend)), label="dtype")
    kw = slp_inputs(b, A, F, R, seed=F + R)
    check_against_reference("slp_project", backend, _on(device, kw, noncontig), dtype)


# --------------------------------------------------------------------------- torch.library checks


def _op_samples(device, backend):
    dtype = dtypes_for(device, backend)[0]
    scan = to(scan_inputs(2, 4, 6, 2, 2), dtype, device, requires_grad=True)
    ss2d = to(ss2d_inputs(2, 2, 3, 4, 2), dtype, device, requires_grad=True)
    slp = to(slp_inputs(2, 3, 8, 5), dtype, device, requires_grad=True)
    return [
        (torch.ops.zeromamba.selective_scan.default, (*scan.values(), False, backend)),
        (torch.ops.zeromamba.ss2d_scan.default, (*ss2d.values(), False, backend)),
        (torch.ops.zeromamba.slp_project.default, (*slp.values(), backend)),
    ]


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_opcheck(device, backend):
    for op, args in _op_samples(device, backend):
        torch.library.opcheck(op, args)


def test_opcheck_layout_ops():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.zeromamba.cross_scan.default, (x,))
    ys = torch.randn(2, 4, 3, 20, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.zeromamba.cross_merge.default, (ys, 4, 5))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_gradcheck_float64(backend):
    if (
        backend not in zeromamba.available_backends()
        or not zeromamba.available_backends()[backend].available
    ):
        pytest.skip(f"{backend} backend not built")
    for op, args in _op_samples("cpu", backend):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        rest = args[len(tensors) :]
        assert torch.autograd.gradcheck(lambda *t, op=op, rest=rest: op(*t, *rest), tensors)


@pytest.mark.parametrize("backend", [b for d, b in BACKENDS if d == "cpu" and b != "triton"])
def test_compile_fullgraph(backend):
    """Each op compiles without a graph break, forward and backward, and matches eager."""
    torch._dynamo.reset()
    for op, args in _op_samples("cpu", backend):
        fn = torch.compile(lambda *a, op=op: op(*a) * 2, fullgraph=True, backend="aot_eager")
        y = fn(*args)
        torch.testing.assert_close(y, op(*args) * 2)
        y.sum().backward()
    x = torch.randn(1, 2, 3, 4, requires_grad=True)
    fn = torch.compile(lambda x: ops.cross_merge(ops.cross_scan(x), 3, 4), fullgraph=True)
    torch.testing.assert_close(fn(x), 4 * x)
