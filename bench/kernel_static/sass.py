"""Read compiled CUDA objects: per-kernel resources (``cuobjdump --dump-resource-usage``), spills
(``ptxas -v``) and the SASS control flow of a kernel (``cuobjdump -sass``).

The hot loop of a scan kernel is found from the SASS alone: a branch to an address at or before
its own is a loop back-edge; a loop whose address range holds no other back-edge is innermost;
the scan's per-tile loops are the innermost loops that contain a block barrier (``BAR.SYNC``: the
block-wide scan of every tile). Per iteration, the instructions counted are those on the longest
path through the loop body's control-flow graph (NOPs excluded): each thread runs one path per
iteration, and for interior tiles that is the long one (every step valid, every load taken).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# --------------------------------------------------------------------------- tools


def find_tool(name: str) -> str | None:
    """A CUDA binary tool on PATH, else the copy Triton ships (cuobjdump, nvdisasm, ptxas)."""
    path = shutil.which(name)
    if path is not None:
        return path
    try:
        import triton
    except ImportError:
        return None
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(bundled) if bundled.exists() else None


def cuobjdump(obj: Path) -> tuple[str, str]:
    """(``cuobjdump --dump-resource-usage``, ``cuobjdump -sass``) of an object file or cubin."""
    tool = find_tool("cuobjdump")
    if tool is None:
        raise RuntimeError("cuobjdump not found (CUDA toolkit, or the copy Triton ships)")

    def dump(flag: str) -> str:
        return subprocess.run(
            [tool, flag, str(obj)], capture_output=True, text=True, check=True
        ).stdout

    return dump("--dump-resource-usage"), dump("-sass")


def _by_kernel(text: str, header: re.Pattern) -> Iterator[tuple[str, str]]:
    """(kernel name, line) for each line from the first ``header`` line on; a header line names
    the kernel of the lines that follow it."""
    name = None
    for line in text.splitlines():
        if m := header.search(line):
            name = m.group(1)
        if name is not None:
            yield name, line


# --------------------------------------------------------------------------- resources


@dataclass
class Resources:
    """One kernel's resources as ``cuobjdump --dump-resource-usage`` prints them.

    ``shared`` is what cuobjdump reports (static shared memory, plus the 1 KiB per block that
    sm_90 reserves for the system where the toolkit includes it); ``stack`` and ``local`` are per
    thread, in bytes."""

    name: str
    regs: int
    stack: int
    shared: int
    local: int


_RES_FUNC = re.compile(r"^\s*Function (\S+):\s*$")
_RES_VALS = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def parse_resource_usage(text: str) -> dict[str, Resources]:
    """``cuobjdump --dump-resource-usage`` output -> {mangled name: Resources}."""
    out: dict[str, Resources] = {}
    for name, line in _by_kernel(text, _RES_FUNC):
        m = _RES_VALS.search(line)
        if m and name not in out:
            regs, stack, shared, local = (int(v) for v in m.groups())
            out[name] = Resources(name, regs, stack, shared, local)
    return out


@dataclass
class PtxasInfo:
    """One kernel's ``ptxas -v`` report: registers, spill bytes, static shared memory (user)."""

    name: str
    regs: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    smem: int = 0
    stack_frame: int = 0


_PTXAS_ENTRY = re.compile(r"(?:Compiling entry function|Function properties for) '?([\w$.]+)'?")
_PTXAS_SPILL = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_PTXAS_USED = re.compile(r"Used (\d+) registers")
_PTXAS_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_verbose(text: str) -> dict[str, PtxasInfo]:
    """``ptxas -v`` (or ``nvcc -Xptxas -v``) output -> {mangled name: PtxasInfo}."""
    out: dict[str, PtxasInfo] = {}
    for name, line in _by_kernel(text, _PTXAS_ENTRY):
        cur = out.setdefault(name, PtxasInfo(name))
        if m := _PTXAS_SPILL.search(line):
            cur.stack_frame, cur.spill_stores, cur.spill_loads = (int(v) for v in m.groups())
        if m := _PTXAS_USED.search(line):
            cur.regs = int(m.group(1))
            if m := _PTXAS_SMEM.search(line):
                cur.smem = int(m.group(1))
    return out


# --------------------------------------------------------------------------- SASS


@dataclass
class Instr:
    addr: int
    pred: str  # "" when unconditional
    op: str  # opcode with modifiers, e.g. "FFMA.FTZ"
    args: str

    @property
    def base(self) -> str:
        return self.op.split(".")[0]


_SASS_FUNC = re.compile(r"^\s*Function : (\S+)")
_SASS_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")


def parse_sass(text: str) -> dict[str, list[Instr]]:
    """``cuobjdump -sass`` output -> {mangled name: instructions in address order}."""
    out: dict[str, list[Instr]] = {}
    cur: list[Instr] | None = None
    for line in text.splitlines():
        m = _SASS_FUNC.match(line)
        if m:
            cur = out.setdefault(m.group(1), [])
            continue
        m = _SASS_INSTR.search(line)
        if m and cur is not None:
            pred = (m.group(2) or "").strip()
            cur.append(Instr(int(m.group(1), 16), pred, m.group(3), m.group(4).strip()))
    return out


def _target(ins: Instr) -> int | None:
    if ins.base != "BRA":
        return None
    m = re.search(r"0x([0-9a-f]+)", ins.args)
    return int(m.group(1), 16) if m else None


def _unconditional(ins: Instr) -> bool:
    return ins.pred in ("", "@PT")


@dataclass
class Loop:
    head: int  # address of the first instruction of the body
    latch: int  # address of the back-edge branch
    instructions: int = 0  # static count of the body (NOPs excluded)
    path: int = 0  # instructions on the longest path through one iteration
    barriers: int = 0  # BAR.SYNC in the body
    inner: list[Loop] = field(default_factory=list)

    def contains(self, other: Loop) -> bool:
        return self.head <= other.head and other.latch <= self.latch and self != other


def loops(code: list[Instr]) -> list[Loop]:
    """Every loop (back-edge) of one function, with its static size, longest iteration path and
    barrier count; ``inner`` lists the loops nested inside it."""
    found: dict[tuple[int, int], Loop] = {}
    for ins in code:
        t = _target(ins)
        if t == ins.addr and _unconditional(ins):
            continue  # the BRA-to-itself that pads the end of every function, not a loop
        if t is not None and t <= ins.addr:
            key = (t, ins.addr)
            found.setdefault(key, Loop(t, ins.addr))
    result = sorted(found.values(), key=lambda lp: (lp.head, -lp.latch))
    for lp in result:
        body = [i for i in code if lp.head <= i.addr <= lp.latch]
        lp.instructions = sum(1 for i in body if i.base != "NOP")
        lp.barriers = sum(1 for i in body if i.op.startswith("BAR.SYNC") or i.op == "BAR")
        lp.inner = [o for o in result if lp.contains(o)]
        lp.path = _longest_path(body, lp)
    return result


def _longest_path(body: list[Instr], lp: Loop) -> int:
    """Instructions on the longest path from the loop head to its back-edge, inner loops counted
    once per iteration of this one (an inner back-edge is not followed)."""
    if not body:
        return 0
    index = {ins.addr: k for k, ins in enumerate(body)}
    best = [-1] * len(body)  # longest count of instructions ending at k (inclusive)
    best[0] = 0 if body[0].base == "NOP" else 1
    for k, ins in enumerate(body):
        if best[k] < 0:
            continue
        succ = []
        t = _target(ins)
        if t is not None and t > ins.addr and t in index:
            succ.append(index[t])  # forward branch inside the body
        ends = ins.base == "EXIT" and _unconditional(ins)
        jumps = t is not None and _unconditional(ins)
        if not ends and not jumps and k + 1 < len(body):
            succ.append(k + 1)
        if t is not None and t <= ins.addr and not _unconditional(ins) and k + 1 < len(body):
            succ.append(k + 1)  # a (conditional) inner back-edge falls through when it exits
        for s in succ:
            cost = 0 if body[s].base == "NOP" else 1
            best[s] = max(best[s], best[k] + cost)
    return max(best[index[lp.latch]], 0)


def hot_loops(code: list[Instr]) -> list[Loop]:
    """The per-tile loops of a scan kernel: the innermost loops that hold a block barrier (loops
    over directions or jobs wrap them; the per-state loop is unrolled inside them). Empty for a
    kernel without such a loop."""
    with_bar = [lp for lp in loops(code) if lp.barriers > 0]
    return [lp for lp in with_bar if not any(lp.contains(o) for o in with_bar)]
