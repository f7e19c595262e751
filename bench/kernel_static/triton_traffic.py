"""Memory traffic of Triton kernels, from running them in Triton's CPU interpreter
(``TRITON_INTERPRET``): **modeled, not measured**.

The interpreter runs a kernel one program at a time with numpy blocks of pointers. While a
:class:`TrafficRecorder` is active, its load, store and atomic entry points are wrapped, so every
dynamic execution of a memory instruction hands over the block's addresses and mask together
with the kernel source line that issued it; nothing in the kernels is changed. The line names the
instruction in the kernel's sm_90 TTGIR (``triton_layouts.memory_ops``), whose layout says which
thread of which warp holds each element. Then, as in the CUDA emulator's model
(``kernel_lab``):

* a *request* is one warp instruction: the lanes of a warp at one vector register group
  (``sizePerThread`` along the fastest dimension, at most 16 bytes, when the addresses are
  contiguous); requests with no active lane issue nothing;
* a request moves its distinct 32-byte sectors (128-byte lines), counted from the start of each
  tensor's storage (GPU allocations are 256-byte aligned); ``bytes_l2`` = 32 x sectors: no credit
  for L1 or L2 reuse between requests, the CUDA model's rule;
* the *ideal* sectors of a request are its distinct addresses' bytes / 32, rounded up: sectors over
  ideal is the transfer a layout wastes (8x for an fp32 column read, one element per sector);
* loads issue from every thread that holds an element (a block smaller than the layout's tile
  is replicated across warps, each warp loading its copy); stores and atomics issue once per
  element (Triton masks the replicas); ``atomics`` counts per-element atomic operations.

An access the TTGIR has in several layouts (the compiler loads a block twice rather than convert
its layout) is counted once per layout: the GPU runs both loads. A memory op whose layout the
TTGIR doesn't give (no TTGIR, an MMA layout) takes ``triton_layouts.default_layout`` and is
counted under ``approximated``.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import triton

from .triton_layouts import MemoryOp, default_layout, memory_ops, thread_map

SECTOR, LINE, VECTOR_BYTES = 32, 128, 16
_TRITON_DIR = str(Path(triton.__file__).resolve().parent)
KINDS = ("load", "store", "atomic")
COUNTS = ("requests", "sectors", "ideal_sectors", "lines", "bytes_l2", "atomics")


@dataclass
class Counts:
    requests: int = 0
    sectors: int = 0
    ideal_sectors: int = 0
    lines: int = 0
    atomics: int = 0

    def add(self, other: Counts, weight: float = 1) -> None:
        for k in ("requests", "sectors", "ideal_sectors", "lines", "atomics"):
            setattr(self, k, getattr(self, k) + weight * getattr(other, k))


@dataclass
class LaunchTraffic:
    """Counts of one launch, in total, per kind and per source line (file:line kind)."""

    kernel: str
    grid: tuple
    num_warps: int
    total: Counts = field(default_factory=Counts)
    kinds: dict = field(default_factory=lambda: defaultdict(Counts))
    sites: dict = field(default_factory=lambda: defaultdict(Counts))
    approximated: set = field(default_factory=set)

    def as_dict(self) -> dict:
        t = self.total
        return {
            "kernel": self.kernel,
            "grid": list(self.grid),
            "num_warps": self.num_warps,
            "requests": t.requests,
            "sectors": t.sectors,
            "ideal_sectors": t.ideal_sectors,
            "lines": t.lines,
            "bytes_l2": SECTOR * t.sectors,
            "atomics": t.atomics,
            "kinds": {k: vars(v).copy() for k, v in self.kinds.items()},
            "sites": {k: vars(v).copy() for k, v in sorted(self.sites.items())},
            "approximated": sorted(self.approximated),
        }


class _Allocations:
    """Maps addresses to (storage index, byte offset) over a launch's tensor arguments."""

    def __init__(self, tensors: list):
        spans = {}
        for t in tensors:
            s = t.untyped_storage()
            spans[s.data_ptr()] = max(spans.get(s.data_ptr(), 0), s.nbytes())
        self.base = np.array(sorted(spans), dtype=np.uint64)
        self.size = np.array([spans[b] for b in sorted(spans)], dtype=np.uint64)

    def locate(self, addr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i = np.searchsorted(self.base, addr, side="right").astype(np.int64) - 1
        if (i < 0).any():
            raise ValueError("a kernel accessed memory outside its tensor arguments")
        off = addr - self.base[i]
        if (off >= self.size[i]).any():
            raise ValueError("a kernel accessed memory past the end of a tensor argument")
        return i, off.astype(np.int64)


def _distinct_per_row(keys: np.ndarray) -> np.ndarray:
    """Distinct non-negative values per row of a 2-D int array (-1 = inactive)."""
    s = np.sort(keys, axis=1)
    new = np.ones_like(s, dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    return ((s >= 0) & new).sum(axis=1)


class _Instruction:
    """One memory op of one kernel: its thread map at one block shape."""

    def __init__(self, op: MemoryOp | None, kind: str, shape: tuple, num_warps: int):
        self.kind = kind
        self.approximated = op is None or op.layout is None
        lay = default_layout(shape, num_warps) if self.approximated else op.layout
        flat, vec = thread_map(lay, shape)
        self.flat = flat  # (warps, lanes, regs)
        self.vec = vec
        # stores and atomics: only the first thread holding an element issues it
        order = flat.reshape(-1)
        first = np.zeros(order.size, dtype=bool)
        _, idx = np.unique(order, return_index=True)
        first[idx] = True
        self.first = first.reshape(flat.shape)


class TrafficRecorder:
    """Collects the traffic of the launches run inside :meth:`launch`."""

    def __init__(self):
        self.launches: list[LaunchTraffic] = []
        self._current: LaunchTraffic | None = None
        self._alloc: _Allocations | None = None
        self._ops: dict = {}
        self._instr: dict = {}
        self._own, self._names = "", set()
        self._paths: dict[str, str] = {}  # code file name -> resolved path
        self.weight = 1.0  # real programs the running program stands for (sampled_programs)

    # ------------------------------------------------------------------ launches
    @contextmanager
    def launch(self, fn, grid: tuple, num_warps: int, tensors: list, ttgir: str | None):
        """Record the accesses made inside the block as one launch of ``fn``; ``ttgir`` is the
        kernel's TTGIR at the real launch's specialisation (None: default layouts)."""
        from triton.runtime.interpreter import interpreter_builder as b

        py = getattr(fn, "fn", fn)
        # TTGIR locations are matched by file name and line: a TTGIR from Triton's cache names
        # the path the same source was first compiled from
        self._own = str(Path(py.__code__.co_filename).resolve())
        self._names = {Path(self._own).name}
        self._ops = defaultdict(list)
        for op in memory_ops(ttgir) if ttgir else []:
            self._ops[(Path(op.file).name, op.line, op.kind)].append(op)
            if op.file:
                self._names.add(Path(op.file).name)
        self._instr = {}
        self._current = LaunchTraffic(py.__name__, tuple(grid), num_warps)
        self._alloc = _Allocations(tensors)
        saved = {
            k: getattr(b, k)
            for k in (
                "create_masked_load",
                "create_masked_store",
                "create_atomic_rmw",
                "create_atomic_cas",
            )
        }

        def load(ptrs, mask, *a, **kw):
            self._record("load", ptrs, mask)
            return saved["create_masked_load"](ptrs, mask, *a, **kw)

        def store(ptrs, value, mask, *a, **kw):
            self._record("store", ptrs, mask)
            return saved["create_masked_store"](ptrs, value, mask, *a, **kw)

        def rmw(op, ptr, val, mask, *a, **kw):
            self._record("atomic", ptr, mask)
            return saved["create_atomic_rmw"](op, ptr, val, mask, *a, **kw)

        def cas(ptr, cmp, val, *a, **kw):
            self._record("atomic", ptr, None)
            return saved["create_atomic_cas"](ptr, cmp, val, *a, **kw)

        b.create_masked_load, b.create_masked_store = load, store
        b.create_atomic_rmw, b.create_atomic_cas = rmw, cas
        try:
            yield self._current
        finally:
            for k, v in saved.items():
                setattr(b, k, v)
            self.launches.append(self._current)
            self._current = None

    # ------------------------------------------------------------------ accesses
    def _site(self) -> tuple[str, int]:
        """(file, line) of the innermost kernel frame on the stack: the kernel's own file, or a
        file of the TTGIR's locations outside the triton package."""
        f = sys._getframe(1)
        while f is not None:
            name = f.f_code.co_filename
            path = self._paths.get(name)
            if path is None:
                path = self._paths[name] = str(Path(name).resolve())
            if path == self._own or (
                Path(path).name in self._names and not path.startswith(_TRITON_DIR)
            ):
                return path, f.f_lineno
            f = f.f_back
        return "", -1

    def _instructions(self, kind: str, site: tuple, shape: tuple) -> list[_Instruction]:
        """The compiled instructions of one source access: one per distinct layout among the
        TTGIR ops of its line, kind and shape (the compiler may load a block twice in two
        layouts rather than convert it; copies in one layout are a pipelined loop's prologue
        and body, one access each); the default layout if there are none."""
        key = (site, kind, shape)
        found = self._instr.get(key)
        if found is None:
            ops = {}
            for o in self._ops.get((Path(site[0]).name, site[1], kind), []):
                if o.shape == shape and o.layout is not None:
                    ops.setdefault(o.layout, o)
            nw = self._current.num_warps
            found = [_Instruction(o, kind, shape, nw) for o in ops.values()] or [
                _Instruction(None, kind, shape, nw)
            ]
            self._instr[key] = found
        return found

    def _record(self, kind: str, ptrs, mask) -> None:
        lt = self._current
        addr = np.asarray(ptrs.data, dtype=np.uint64)
        shape = addr.shape if addr.ndim else ()
        active = np.ones(addr.shape, dtype=bool) if mask is None else np.asarray(mask.data, bool)
        active = np.broadcast_to(active, addr.shape)
        site = self._site()
        elem = np.dtype(_np_dtype(ptrs)).itemsize
        if addr.size == 1:
            shape = ()
        c = Counts()
        if shape == ():
            # a scalar: every warp loads it (one sector each); a store or atomic issues once
            if active.reshape(-1)[0]:
                n = lt.num_warps if kind == "load" else 1
                c.requests = c.sectors = c.ideal_sectors = c.lines = n
                c.atomics = 1 if kind == "atomic" else 0
        else:
            for ins in self._instructions(kind, site, shape):
                if ins.approximated:
                    lt.approximated.add(f"{Path(site[0]).name}:{site[1]} {kind}")
                c.add(_count(ins, addr.reshape(-1), active.reshape(-1), elem, self._alloc))
        w = self.weight
        lt.total.add(c, w)
        lt.kinds[kind].add(c, w)
        lt.sites[f"{Path(site[0]).name}:{site[1]} {kind}"].add(c, w)


def _np_dtype(ptrs) -> np.dtype:
    from triton.runtime.interpreter import _get_np_dtype

    return _get_np_dtype(ptrs.get_element_ty())


def _count(ins: _Instruction, addr: np.ndarray, active: np.ndarray, elem: int, alloc) -> Counts:
    flat = ins.flat
    live = active[flat]
    if ins.kind != "load":
        live = live & ins.first
    # masked-off lanes may point anywhere: only active addresses are located
    storage, off = alloc.locate(np.where(active, addr, alloc.base[0]))
    a_off = off[flat]  # (warps, lanes, regs)
    a_sto = storage[flat]
    w, ln, r = flat.shape
    vec = min(ins.vec, max(1, VECTOR_BYTES // elem))
    if r % vec or not _contiguous(a_off, a_sto, vec, elem):
        vec = 1
    g = r // vec

    def per_request(
        x: np.ndarray,
    ) -> np.ndarray:  # (warps, lanes, groups, vec) -> (requests, lanes*vec)
        return x.reshape(w, ln, g, vec).transpose(0, 2, 1, 3).reshape(w * g, ln * vec)

    live_r = per_request(live)
    sto_r = per_request(a_sto)
    off_r = per_request(a_off)

    def keys(unit: int) -> np.ndarray:
        k = (sto_r << 40) | (off_r // unit)
        return np.where(live_r, k, -1)

    issued = live_r.any(axis=1)
    c = Counts()
    c.requests = int(issued.sum())
    c.sectors = int(_distinct_per_row(keys(SECTOR)).sum())
    c.lines = int(_distinct_per_row(keys(LINE)).sum())
    distinct = _distinct_per_row(keys(elem))  # distinct addresses
    c.ideal_sectors = int(np.ceil(distinct * elem / SECTOR).sum())
    if ins.kind == "atomic":
        c.atomics = int(live.sum())
    return c


def _contiguous(off: np.ndarray, sto: np.ndarray, vec: int, elem: int) -> bool:
    """Whether every group of ``vec`` registers of a thread covers consecutive addresses."""
    if vec == 1:
        return True
    w, ln, r = off.shape
    o = off.reshape(w, ln, r // vec, vec)
    s = sto.reshape(w, ln, r // vec, vec)
    return bool((np.diff(o, axis=3) == elem).all() and (np.diff(s, axis=3) == 0).all())


@contextmanager
def fast_scans():
    """Within the block, the interpreter's ``tl.associative_scan`` with a user combine function
    runs as a log-step (Hillis-Steele) scan over whole slices instead of one Python call per
    element: the same result up to the rounding order of an associative combine, about two
    orders of magnitude faster on a scan tile. Addresses never depend on it."""
    from triton.runtime.interpreter import ScanOps

    def generic_scan(self, input):
        axis, n = self.axis, input[0].handle.data.shape[self.axis]
        acc = [arg.handle.data.copy() for arg in input]
        step = 1
        # whole (power-of-two) tiles: element i combines with i - step; i < step is discarded
        while step < n:
            prev = [self.to_tensor(np.roll(a, step, axis), x.dtype) for a, x in zip(acc, input)]
            cur = [self.to_tensor(a, x.dtype) for a, x in zip(acc, input)]
            with np.errstate(all="ignore"):
                ret = self.combine_fn.fn(*prev, *cur)
            ret = ret if isinstance(ret, tuple) else (ret,)
            idx = [slice(None)] * acc[0].ndim
            idx[axis] = slice(step, n)
            idx = tuple(idx)
            acc = [a.copy() for a in acc]
            for a, r in zip(acc, ret):
                a[idx] = np.broadcast_to(r.handle.data if hasattr(r, "handle") else r, a.shape)[idx]
            step *= 2
        return [self.to_tensor(a, x.dtype) for a, x in zip(acc, input)]

    saved = ScanOps.generic_scan
    ScanOps.generic_scan = generic_scan
    try:
        yield
    finally:
        ScanOps.generic_scan = saved


def _axis_sample(n: int, k: int, splits: tuple[int, ...] = ()) -> tuple[list[int], list[float]]:
    """At most ``k`` program indices of an axis of ``n`` and the programs each stands for: the
    first and the last (the tails) alone, evenly spaced inner ones sharing the rest. ``splits``
    cut the axis into segments of different work (a launch whose first programs scan rows and
    the rest columns), each sampled on its own."""
    cuts = [c for c in splits if 0 < c < n]
    if cuts:
        idx, wts = [], []
        for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
            i, w = _axis_sample(hi - lo, k)
            idx += [lo + x for x in i]
            wts += w
        return idx, wts
    if k <= 0 or n <= k:
        return list(range(n)), [1.0] * n
    inner = [round(1 + i * (n - 3) / (k - 3)) for i in range(k - 2)] if k > 2 else []
    inner = sorted(set(inner))
    return [0, *inner, n - 1], [1.0, *[(n - 2) / len(inner)] * len(inner), 1.0]


@contextmanager
def sampled_programs(grid: tuple, per_axis: int, recorder: TrafficRecorder, splits0=()):
    """Run only a sample of a launch's programs: yields the grid to launch, whose program
    (i, j, k) runs as the real program of the sample, with the real grid size, and weighs its
    counts by the programs it stands for (``_axis_sample``). Exact when the inner programs of an
    axis do equal work, as a scan's channel blocks and chunks do; ``per_axis`` <= 0: every
    program. ``splits0``: segment starts on axis 0 (``_axis_sample``)."""
    import triton.language as tl
    from triton.runtime.interpreter import TensorHandle
    from triton.runtime.interpreter import interpreter_builder as b

    grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
    samples = [_axis_sample(n, per_axis, splits0 if a == 0 else ()) for a, n in enumerate(grid)]
    saved = {
        k: getattr(b, k)
        for k in ("set_grid_idx", "create_get_program_id", "create_get_num_programs")
    }
    real_idx = [0, 0, 0]

    def set_grid_idx(x, y, z):
        saved["set_grid_idx"](x, y, z)
        w = 1.0
        for a, i in enumerate((x, y, z)):
            real_idx[a] = samples[a][0][i]
            w *= samples[a][1][i]
        recorder.weight = w

    def program_id(axis):
        return TensorHandle(np.array([real_idx[axis]], dtype=np.int32), tl.int32)

    def num_programs(axis):
        return TensorHandle(np.array([grid[axis]], dtype=np.int32), tl.int32)

    b.set_grid_idx, b.create_get_program_id = set_grid_idx, program_id
    b.create_get_num_programs = num_programs
    try:
        yield tuple(len(s[0]) for s in samples)
    finally:
        for k, v in saved.items():
            setattr(b, k, v)
        recorder.weight = 1.0
