"""Which thread of a Triton kernel holds which element of a memory instruction's block, from the
kernel's sm_90 TTGIR.

Triton lowers ``tl.load``, ``tl.store`` and ``tl.atomic_*`` on a block of pointers with the
block's *layout*: ``#ttg.blocked<{sizePerThread, threadsPerWarp, warpsPerCTA, order}>`` (after
the coalescing pass, ``sizePerThread`` along ``order[0]`` is the vector width of the access),
``#ttg.slice<{dim, parent}>`` (a block reduced along ``dim`` of its parent's layout) or
``#ttg.linear<{register, lane, warp}>`` (an element's coordinates are the XOR of one basis
vector per set bit of the register, lane and warp index). :func:`memory_ops` finds every
``tt.load`` (or the ``ttg.async_copy_global_to_local`` a pipelined loop makes of it) /
``tt.store`` / ``tt.atomic_rmw`` / ``tt.atomic_cas`` with its source line (the
TTGIR's ``loc`` records); :func:`thread_map` turns a layout and a block shape into the flat
element index each (warp, lane, register) holds. Where a layout can't be read (an MMA or
dot-operand layout, or an op with no TTGIR line), :func:`default_layout` stands in: Triton's own
default blocked layout for the shape (one element per thread, lanes along the last dimension
first), and the caller marks the instruction as approximated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

MEMORY_OPS = {
    "tt.load": "load",
    "ttg.async_copy_global_to_local": "load",  # a pipelined loop's cp.async
    "tt.store": "store",
    "tt.atomic_rmw": "atomic",
    "tt.atomic_cas": "atomic",
}
_ELEM_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "f64": 8, "i32": 4, "i64": 8, "i16": 2, "i8": 1}


@dataclass(frozen=True)
class Layout:
    """A distributed layout: ``kind`` "blocked" (fields spt, tpw, wpc, order) or "linear"
    (fields reg, lane, warp: basis vectors, one coordinate per dimension)."""

    kind: str
    spt: tuple = ()
    tpw: tuple = ()
    wpc: tuple = ()
    order: tuple = ()
    reg: tuple = ()
    lane: tuple = ()
    warp: tuple = ()
    sliced: tuple = ()  # dimensions removed by #ttg.slice, outermost first


@dataclass(frozen=True)
class MemoryOp:
    """One memory instruction of the TTGIR: ``kind`` (load/store/atomic), source (file, line),
    block shape (() for a scalar), element bytes, layout (None: unreadable)."""

    kind: str
    file: str
    line: int
    shape: tuple
    elem_bytes: int
    layout: Layout | None


def _ints(text: str) -> tuple:
    return tuple(int(v) for v in re.findall(r"-?\d+", text))


def _parse_blocked(body: str) -> Layout:
    def field(name: str) -> tuple:
        m = re.search(name + r"\s*=\s*\[([^\]]*)\]", body)
        if m is None:
            raise ValueError(f"blocked layout without {name}: {body}")
        return _ints(m.group(1))

    return Layout(
        "blocked",
        spt=field("sizePerThread"),
        tpw=field("threadsPerWarp"),
        wpc=field("warpsPerCTA"),
        order=field("order"),
    )


def _parse_linear(body: str) -> Layout:
    def bases(name: str) -> tuple:
        m = re.search(name + r"\s*=\s*\[((?:\s*\[[^\]]*\]\s*,?)*)\]", body)
        if m is None:
            return ()
        return tuple(_ints(v) for v in re.findall(r"\[([^\]]*)\]", m.group(1)))

    return Layout("linear", reg=bases("register"), lane=bases("lane"), warp=bases("warp"))


def _parse_layout(text: str, aliases: dict[str, str]) -> Layout | None:
    """A layout attribute, either inline or an alias like ``#blocked1``; None if unsupported."""
    text = text.strip()
    if text in aliases:
        text = aliases[text]
    m = re.match(r"#ttg\.slice<\{dim\s*=\s*(\d+)\s*,\s*parent\s*=\s*(.*)\}>$", text)
    if m:
        parent = _parse_layout(m.group(2), aliases)
        if parent is None:
            return None
        return Layout(**{**parent.__dict__, "sliced": (int(m.group(1)), *parent.sliced)})
    m = re.match(r"#ttg\.blocked<\{(.*)\}>$", text)
    if m:
        return _parse_blocked(m.group(1))
    m = re.match(r"#ttg\.linear<\{(.*)\}>$", text)
    if m:
        return _parse_linear(m.group(1))
    return None


def _locations(ttgir: str) -> dict[str, tuple[str, int] | None]:
    """#locN -> (file, line) of the innermost source location (callee of a callsite)."""
    raw = dict(re.findall(r"^(#loc\d*) = loc\((.*)\)\s*$", ttgir, flags=re.MULTILINE))
    out: dict[str, tuple[str, int] | None] = {}

    def resolve(ref: str, depth: int = 0) -> tuple[str, int] | None:
        if ref in out:
            return out[ref]
        body = raw.get(ref)
        res = None
        if body is not None and depth < 64:
            m = re.match(r'"([^"]+)":(\d+):\d+', body)
            if m:
                res = (m.group(1), int(m.group(2)))
            else:  # name("x"(#loc7)), callsite(#locA at #locB), fused[...]
                inner = re.search(r"(#loc\d*)", body)
                if inner:
                    res = resolve(inner.group(1), depth + 1)
        out[ref] = res
        return res

    for ref in raw:
        resolve(ref)
    return out


def _tensor_type(text: str) -> tuple[tuple, int, str] | None:
    """'tensor<16x64x!tt.ptr<bf16>, #blocked>' -> ((16, 64), 2, '#blocked')."""
    m = re.match(r"tensor<((?:\d+x)*)!tt\.ptr<(\w+)>\s*,\s*(.*)>$", text.strip())
    if m is None:
        return None
    shape = tuple(int(v) for v in m.group(1).split("x") if v)
    return shape, _ELEM_BYTES.get(m.group(2), 4), m.group(3)


def memory_ops(ttgir: str) -> list[MemoryOp]:
    """Every memory instruction of a kernel's TTGIR with its source line and layout."""
    aliases = dict(re.findall(r"^(#\w+) = (#ttg\.\w+<\{.*\}>)\s*$", ttgir, flags=re.MULTILINE))
    locs = _locations(ttgir)
    ops = []
    for line in ttgir.splitlines():
        m = re.search(
            r"=\s*(tt\.load|ttg\.async_copy_global_to_local|tt\.atomic_rmw|tt\.atomic_cas)\b"
            r"|^\s*(tt\.store)\b",
            line,
        )
        if m is None:
            continue
        name = m.group(1) or m.group(2)
        loc = re.search(r"loc\((#loc\d*)\)\s*$", line)
        src = locs.get(loc.group(1)) if loc else None
        # the pointer operand's type: the first type after ':' (a "(...)" list for atomics)
        types = line.split(" : ", 1)[1] if " : " in line else ""
        ptr = re.search(r"(tensor<(?:\d+x)*!tt\.ptr<\w+>\s*,\s*(?:#[\w.]+(?:<\{.*?\}>)?)>)", types)
        if ptr:
            shape, nbytes, lay = _tensor_type(ptr.group(1))
            layout = _parse_layout(lay, aliases)
        else:  # a scalar access: !tt.ptr<f32>
            s = re.search(r"!tt\.ptr<(\w+)>", types)
            shape, nbytes, layout = (), _ELEM_BYTES.get(s.group(1), 4) if s else 4, None
        ops.append(
            MemoryOp(
                MEMORY_OPS[name],
                src[0] if src else "",
                src[1] if src else -1,
                shape,
                nbytes,
                layout,
            )
        )
    return ops


def default_layout(shape: tuple, num_warps: int) -> Layout:
    """Triton's default blocked layout of a shape: one element per thread, lanes then warps over
    the last dimension first (the stand-in for a layout the TTGIR doesn't give)."""
    r = len(shape)
    order = tuple(range(r - 1, -1, -1))
    tpw, lanes = [1] * r, 32
    for d in order:
        t = min(lanes, max(1, shape[d]))
        tpw[d], lanes = t, lanes // t
    tpw[order[-1]] *= lanes
    wpc, warps = [1] * r, num_warps
    for d in order:
        t = min(warps, max(1, shape[d] // tpw[d]))
        wpc[d], warps = t, warps // t
    wpc[order[-1]] *= warps
    return Layout("blocked", spt=(1,) * r, tpw=tuple(tpw), wpc=tuple(wpc), order=order)


def _blocked_coords(lay: Layout, shape: tuple) -> tuple[np.ndarray, int]:
    """Coordinates (warps, lanes, regs, rank) of every element a thread holds; registers run
    fastest along order[0]. Returns (coords, consecutive registers along order[0])."""
    r = len(shape)
    nw, nl = math.prod(lay.wpc), math.prod(lay.tpw)
    tile = [lay.spt[d] * lay.tpw[d] * lay.wpc[d] for d in range(r)]
    regs = [lay.spt[d] * max(1, -(-shape[d] // tile[d])) for d in range(r)]

    def split(index: np.ndarray, sizes: tuple) -> list[np.ndarray]:
        out = [None] * r
        for d in lay.order:
            out[d] = index % sizes[d]
            index = index // sizes[d]
        return out

    w = split(np.arange(nw), lay.wpc)
    ln = split(np.arange(nl), lay.tpw)
    g = split(np.arange(math.prod(regs)), tuple(regs))
    coords = np.empty((nw, nl, math.prod(regs), r), dtype=np.int64)
    for d in range(r):
        k, i = g[d] // lay.spt[d], g[d] % lay.spt[d]
        idx = (
            k[None, None, :] * tile[d]
            + w[d][:, None, None] * lay.spt[d] * lay.tpw[d]
            + ln[d][None, :, None] * lay.spt[d]
            + i[None, None, :]
        )
        coords[..., d] = idx % shape[d]
    return coords, lay.spt[lay.order[0]] if r else 1


def _linear_coords(lay: Layout, shape: tuple) -> tuple[np.ndarray, int]:
    r = len(shape)

    def combine(bases: tuple) -> np.ndarray:
        n = 1 << len(bases)
        out = np.zeros((n, r), dtype=np.int64)
        for bit, b in enumerate(bases):
            sel = (np.arange(n) >> bit) & 1 == 1
            out[sel] ^= np.asarray(b, dtype=np.int64)
        return out

    reg, lane, warp = combine(lay.reg), combine(lay.lane), combine(lay.warp)
    coords = warp[:, None, None, :] ^ lane[None, :, None, :] ^ reg[None, None, :, :]
    coords %= np.asarray(shape, dtype=np.int64)
    vec = 1
    for k, b in enumerate(lay.reg):  # leading register bases 1, 2, 4 ... along one dimension
        nz = [d for d in range(r) if b[d]]
        if len(nz) != 1 or b[nz[0]] != 1 << k or (k and not lay.reg[0][nz[0]]):
            break
        vec = 2 << k
    return coords, vec


def thread_map(lay: Layout, shape: tuple) -> tuple[np.ndarray, int]:
    """(flat element index of shape (warps, lanes, registers), registers per vector access).

    Registers of one thread that land on the same element (slice layouts, blocks smaller than
    the layout's tile) are kept: the caller decides whether duplicates issue."""
    full = list(shape)
    for d in sorted(lay.sliced):
        full.insert(d, 1)
    full = tuple(full)
    if lay.kind == "blocked":
        coords, vec = _blocked_coords(lay, full)
    else:
        coords, vec = _linear_coords(lay, full)
    keep = [d for d in range(len(full)) if d not in lay.sliced]
    coords = coords[..., keep]
    flat = np.zeros(coords.shape[:3], dtype=np.int64)
    for d, n in enumerate(shape):
        flat = flat * n + coords[..., d]
    fastest = lay.order[0] if lay.kind == "blocked" and lay.order else len(full) - 1
    if fastest in lay.sliced:
        vec = 1
    return flat, max(1, vec)
