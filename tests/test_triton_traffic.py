"""The Triton traffic model of the kernel report (bench/kernel_static/triton_traffic.py) on tiny
hand-made kernels with known answers. The layouts are given as the TTGIR lines Triton writes for
sm_90, so no compile is needed; the kernels run in the interpreter (conftest sets it)."""

import inspect
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")
tl = triton.language
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from kernel_static.triton_layouts import default_layout, memory_ops, thread_map
from kernel_static.triton_traffic import (
    TrafficRecorder,
    _axis_sample,
    fast_scans,
    sampled_programs,
)


@triton.jit
def _copy(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(x_ptr + o, mask=o < n)
    tl.store(y_ptr + o, v, mask=o < n)


@triton.jit
def _column(x_ptr, y_ptr, R, BR: tl.constexpr, BC: tl.constexpr):
    r = tl.arange(0, BR)[:, None]
    c = tl.arange(0, BC)[None, :]
    v = tl.load(x_ptr + r * R + c)  # x is (BR, R) row-major: a column block
    tl.store(y_ptr + r * BC + c, v)


@triton.jit
def _atomic(x_ptr, y_ptr, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    tl.atomic_add(y_ptr + o, tl.load(x_ptr + o), sem="relaxed")


@triton.jit
def _add(a1, a2):
    return a1 + a2


@triton.jit
def _scan(x_ptr, y_ptr, BR: tl.constexpr, BT: tl.constexpr):
    o = tl.arange(0, BR)[:, None] * BT + tl.arange(0, BT)[None, :]
    tl.store(y_ptr + o, tl.associative_scan(tl.load(x_ptr + o), 1, _add))


def _line(fn, text: str) -> int:
    src, first = inspect.getsourcelines(fn.fn)
    return first + next(i for i, s in enumerate(src) if text in s)


def _ttgir(fn, ops: list[tuple[str, str, str, str]], elsewhere: bool = False) -> str:
    """A TTGIR with one memory op per (op, marker text in the source, pointer type, layout);
    ``elsewhere``: its locations name another copy of the source (Triton's cache does)."""
    file = inspect.getsourcefile(fn.fn)
    if elsewhere:
        file = f"/another/checkout/{Path(file).name}"
    lines, locs = [], []
    for k, (op, marker, ptr, layout) in enumerate(ops):
        lines.append(f"#l{k} = {layout}")
        res = "" if op == "tt.store" else f"%v{k} = "
        lines.append(f"    {res}{op} %p{k} : {ptr.replace('LAYOUT', f'#l{k}')} loc(#loc{k + 1})")
        locs.append(f'#loc{k + 1} = loc("{file}":{_line(fn, marker)}:5)')
    return "\n".join(lines + locs) + "\n"


def _blocked(spt, tpw, wpc, order) -> str:
    return (
        f"#ttg.blocked<{{sizePerThread = {spt}, threadsPerWarp = {tpw}, "
        f"warpsPerCTA = {wpc}, order = {order}}}>"
    )


def _run(fn, grid, tensors, ttgir, num_warps=4, **kwargs):
    rec = TrafficRecorder()
    args = [a for a in tensors]
    with rec.launch(fn, grid, num_warps, [t for t in args if isinstance(t, torch.Tensor)], ttgir):
        fn[grid](*args, **kwargs)
    return rec.launches[0]


def test_layout_parse_and_thread_map():
    g = (
        "#blocked = " + _blocked([1, 4], [4, 8], [4, 1], [1, 0]) + "\n"
        "    %3 = tt.load %2 : tensor<16x32x!tt.ptr<bf16>, #blocked> loc(#loc3)\n"
        '#loc2 = loc("k.py":7:9)\n#loc3 = loc("v"(#loc2))\n'
    )
    (op,) = memory_ops(g)
    assert (op.kind, op.file, op.line, op.shape, op.elem_bytes) == ("load", "k.py", 7, (16, 32), 2)
    flat, vec = thread_map(op.layout, op.shape)
    assert flat.shape == (4, 32, 4) and vec == 4
    # every element held exactly once; lane 1 of warp 0 holds elements 4..7 of row 0
    assert sorted(flat.reshape(-1).tolist()) == list(range(512))
    assert flat[0, 1].tolist() == [4, 5, 6, 7]
    # a pipelined loop's cp.async is a load of its source pointers
    g2 = (
        "#blocked = " + _blocked([1, 4], [4, 8], [4, 1], [1, 0]) + "\n"
        "    %q = ttg.async_copy_global_to_local %p, %s mask %m other %c {contiguity = 4 : i32} : "
        "tensor<32x16x!tt.ptr<bf16>, #blocked> -> <32x16xbf16, #shared, #smem, mutable> loc(#loc3)\n"
        '#loc3 = loc("k.py":9:9)\n'
    )
    (cp,) = memory_ops(g2)
    assert (cp.kind, cp.line, cp.shape, cp.layout.spt) == ("load", 9, (32, 16), (1, 4))
    # the default layout of a (64, 32) block: lanes along the last dimension
    d = default_layout((64, 32), 4)
    assert d.tpw == (1, 32) and d.wpc == (4, 1)


def test_coalesced_copy_moves_ideal_sectors():
    n = 4096
    x, y = torch.randn(n), torch.empty(n)
    lay = _blocked([4], [32], [4], [0])
    g = _ttgir(
        _copy,
        [
            ("tt.load", "tl.load", "tensor<1024x!tt.ptr<f32>, LAYOUT>", lay),
            ("tt.store", "tl.store", "tensor<1024x!tt.ptr<f32>, LAYOUT>", lay),
        ],
    )
    t = _run(_copy, (4,), [x, y, n], g, BLOCK=1024)
    assert torch.equal(x, y)
    assert not t.approximated
    for kind in ("load", "store"):
        c = t.kinds[kind]
        # 16-byte vectors: a warp request covers 512 contiguous bytes = 16 sectors
        assert c.requests == n // 128 and c.sectors == n * 4 // 32 == c.ideal_sectors
    assert t.total.atomics == 0


def test_column_read_wastes_8x_in_fp32():
    R, BR, BC = 64, 32, 1
    x, y = torch.randn(BR, R), torch.empty(BR, BC)
    # a (32, 1) block, one element per lane down the column: 32 sectors per request
    lay = _blocked([1, 1], [32, 1], [1, 1], [0, 1])
    ptr = "tensor<32x1x!tt.ptr<f32>, LAYOUT>"
    ops = [("tt.load", "tl.load", ptr, lay), ("tt.store", "tl.store", ptr, lay)]
    t = _run(
        _column, (1,), [x, y, R], _ttgir(_column, ops, elsewhere=True), num_warps=1, BR=BR, BC=BC
    )
    assert torch.equal(y[:, 0], x[:, 0])
    assert not t.approximated
    ld, st = t.kinds["load"], t.kinds["store"]
    assert (ld.requests, ld.sectors, ld.ideal_sectors) == (1, 32, 4)  # 8x the ideal
    assert (st.requests, st.sectors, st.ideal_sectors) == (1, 4, 4)  # y's column is contiguous


def test_a_block_loaded_in_two_layouts_counts_both():
    R, BR, BC = 64, 32, 1
    x, y = torch.randn(BR, R), torch.empty(BR, BC)
    col = _blocked([1, 1], [32, 1], [1, 1], [0, 1])
    one = _blocked([1, 1], [1, 32], [1, 1], [1, 0])  # all lanes on the size-1 dimension
    ptr = "tensor<32x1x!tt.ptr<f32>, LAYOUT>"
    g = _ttgir(_column, [("tt.load", "tl.load", ptr, col), ("tt.load", "tl.load", ptr, one)])
    t = _run(_column, (1,), [x, y, R], g, num_warps=1, BR=BR, BC=BC)
    # column layout: 1 request of 32 sectors; the other: 32 registers, 32 one-sector requests
    assert (t.kinds["load"].requests, t.kinds["load"].sectors) == (1 + 32, 32 + 32)


def test_atomic_count_and_replicated_stores_issue_once():
    B = 256
    x, y = torch.randn(B), torch.zeros(B)
    # a 256-element block on a 512-thread layout: every element is held by two threads
    lay = _blocked([1], [32], [16], [0])
    ptr = "tensor<256x!tt.ptr<f32>, LAYOUT>"
    g = _ttgir(
        _atomic, [("tt.atomic_rmw", "tl.atomic_add", ptr, lay), ("tt.load", "tl.load", ptr, lay)]
    )
    t = _run(_atomic, (3,), [x, y], g, num_warps=16, BLOCK=B)
    torch.testing.assert_close(y, 3 * x)
    a, ld = t.kinds["atomic"], t.kinds["load"]
    assert a.atomics == 3 * B  # once per element, not per replica
    assert (a.requests, a.sectors) == (3 * 8, 3 * B * 4 // 32)
    assert (ld.requests, ld.sectors) == (3 * 16, 2 * 3 * B * 4 // 32)  # both replicas load


def test_untagged_instruction_falls_back_to_the_default_layout():
    R, BR, BC = 64, 32, 1
    x, y = torch.randn(BR, R), torch.empty(BR, BC)
    t = _run(_column, (1,), [x, y, R], None, num_warps=1, BR=BR, BC=BC)
    assert len(t.approximated) == 2
    assert t.kinds["load"].sectors == 32


def test_fast_scan_matches_the_interpreter():
    x = torch.randn(4, 16)
    ref, fast = torch.empty_like(x), torch.empty_like(x)
    _scan[(1,)](x, ref, BR=4, BT=16)
    with fast_scans():
        _scan[(1,)](x, fast, BR=4, BT=16)
    torch.testing.assert_close(fast, torch.cumsum(x, 1))
    torch.testing.assert_close(ref, fast)


def test_sampled_programs_scale_to_the_full_grid():
    # 37 programs of 64: the last one is a partial tile, the inner ones equal
    n = 37 * 64 - 20
    x, y = torch.randn(n), torch.empty(n)
    lay = _blocked([2], [32], [1], [0])
    ptr = "tensor<64x!tt.ptr<f32>, LAYOUT>"
    g = _ttgir(_copy, [("tt.load", "tl.load", ptr, lay), ("tt.store", "tl.store", ptr, lay)])
    full = _run(_copy, (37,), [x, y, n], g, num_warps=1, BLOCK=64)
    rec = TrafficRecorder()
    y2 = torch.zeros(n)
    with rec.launch(_copy, (37,), 1, [x, y2], g), sampled_programs((37,), 5, rec) as grid:
        assert grid == (5, 1, 1)
        _copy[grid](x, y2, n, BLOCK=64)
    part = rec.launches[0].total
    for k in ("requests", "sectors", "ideal_sectors", "lines"):
        assert getattr(part, k) == pytest.approx(getattr(full.total, k))
    # the sampled programs ran as their real selves: the last tile was copied
    assert torch.equal(y2[-44:], x[-44:]) and int((y2 != 0).sum()) < n


@pytest.mark.parametrize("n, k, cut", [(100, 6, 40), (9, 6, 3), (50, 4, 1)])
def test_axis_segments_are_sampled_on_their_own(n, k, cut):
    """A launch whose first ``cut`` programs scan rows and the rest columns: each segment
    stands for exactly its own programs, so unequal work per segment is still scaled right."""
    idx, w = _axis_sample(n, k, (cut,))
    assert idx == sorted(set(idx)) and 0 in idx and cut - 1 in idx and cut in idx
    assert sum(wi for i, wi in zip(idx, w, strict=True) if i < cut) == pytest.approx(cut)
    assert sum(wi for i, wi in zip(idx, w, strict=True) if i >= cut) == pytest.approx(n - cut)
