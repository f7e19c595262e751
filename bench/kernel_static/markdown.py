"""kernels.md from the report dict of bench/kernel_report.py."""

from __future__ import annotations

from . import cost_model as cm


def _f(v, fmt="{:.0f}", none="-") -> str:
    return none if v is None else fmt.format(v)


def _variant(v: dict) -> str:
    return " ".join(f"{k}={x}" for k, x in v.items())


def _shape(s: dict) -> str:
    if "H" in s:
        return f"b={s['b']} C={s['C']} {s['H']}x{s['W']} N={s['N']}"
    if "L" in s:
        return f"b={s['b']} d={s['d']} L={s['L']} N={s['N']}"
    return " ".join(f"{k}={v}" for k, v in s.items())


def _used_by(r: dict) -> str:
    """Triton rows: the ops (and layouts) that launch this specialisation."""
    used = r.get("used_by") or []
    kinds = sorted({" ".join(u.split()[:2] + u.split()[-1:]).replace(" -", "") for u in used})
    return f" ({'; '.join(kinds)})" if kinds else ""


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table: the header, its separator and one line per row of cells."""
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(cells) + " |" for cells in rows),
    ]


def kernels_table(rows: list[dict]) -> list[str]:
    columns = ["backend", "kernel", "variant", "regs", "spill B", "smem static B", "threads"]
    columns += ["occupancy H100 (limiter)", "SASS/step"]
    cells = []
    for r in rows:
        occ = r["occupancy_h100"]
        cells.append(
            [
                r["backend"],
                r["name"],
                f"{_variant(r['variant'])}{_used_by(r)}",
                str(r["regs"]),
                _f(r["spill_bytes"]),
                str(r["smem_static_bytes"]),
                _f(r["threads_per_block"]),
                "-" if occ is None else f"{occ:.1%} ({r['occupancy_limiter']})",
                _f(r["sass_per_step"], "{:.0f}"),
            ]
        )
    return _table(columns, cells)


def ops_table(rows: list[dict]) -> list[str]:
    columns = ["backend", "op", "pass", "shape", "layout", "bytes min (MB)", "bytes moved (MB)"]
    columns += ["moved/min", "sectors/request", "atomics (M)", "modeled ms H100 (issue ms)"]
    columns += ["modeled % of copy BW", "bound"]
    cells = []
    for r in rows:
        moved, mn = r["bytes_moved"], r["bytes_min"]
        frac = r["modeled_fraction_of_copy_bw"]
        # sectors/request with the Triton model's waste over ideal sectors, e.g. "3.87 (2.44x)"
        over_ideal = _f(r.get("sectors_over_ideal"), " ({:.2f}x ideal)", "")
        cells.append(
            [
                r["backend"],
                r["op"],
                r["pass"],
                _shape(r["shape"]),
                r["layout"],
                f"{mn / 1e6:.0f}",
                _f(None if moved is None else moved / 1e6),
                _f(None if moved is None else moved / mn, "{:.2f}x"),
                _f(r["sectors_per_request"], "{:.2f}") + over_ideal,
                _f(None if r["atomics"] is None else r["atomics"] / 1e6, "{:.1f}"),
                f"{_f(r['modeled_ms_h100'], '{:.3f}')} ({_f(r.get('modeled_issue_ms'), '{:.3f}')})",
                _f(None if frac is None else 100 * frac, "{:.1f}%"),
                r.get("bound", "-"),
            ]
        )
    return _table(columns, cells)


def slp_table(rows: list[dict]) -> list[str]:
    columns = ["backend", "peer", "shape", "fwd+bwd ms", "peer fwd+bwd ms"]
    columns += ["speed-up (target >= 2x)", "saved MB", "peer saved MB"]
    columns += ["memory ratio (target >= 10x)"]
    cells = [
        [
            r["backend"],
            r["peer"],
            _shape(r["shape"]),
            f"{r['fwd_bwd_ms']:.4f}",
            f"{r['peer_fwd_bwd_ms']:.4f}",
            f"{r['speedup']:.2f}x",
            f"{r['saved_bytes'] / 1e6:.3f}",
            f"{r['peer_saved_bytes'] / 1e6:.1f}",
            f"{r['memory_ratio']:.0f}x",
        ]
        for r in rows
    ]
    return _table(columns, cells)


def ratio_table(rows: list[dict]) -> list[str]:
    """Triton over CUDA modeled time per op, pass, layout and shape (target: <= 1.5x)."""
    columns = ["op", "pass", "shape", "layout", "Triton ms", "CUDA ms", "Triton / CUDA"]
    columns += ["within 1.5x", "Triton kernels charged bytes only"]

    def key(r: dict) -> tuple:
        return r["op"], r["pass"], repr(r["shape"]), r["layout"]

    cuda = {key(r): r for r in rows if r["backend"] == "cuda"}
    cells = []
    for r in rows:
        q = r.get("modeled_triton_over_cuda")
        if r["backend"] != "triton" or q is None:
            continue
        cells.append(
            [
                r["op"],
                r["pass"],
                _shape(r["shape"]),
                r["layout"],
                f"{r['modeled_ms_h100']:.3f}",
                f"{cuda[key(r)]['modeled_ms_h100']:.3f}",
                f"{q:.2f}x",
                "yes" if q <= 1.5 else "no",
                ", ".join(r.get("issue_not_modeled", [])) or "-",
            ]
        )
    return _table(columns, cells)


ASSUMPTIONS = f"""\
## The model (**modeled, not measured**)

* **Kernels.** Every `.cu` of `csrc/cuda` is compiled alone for sm_90 with the flags of setup.py
  (`-O3 --use_fast_math -lineinfo --expt-relaxed-constexpr -std=c++17`). Registers and stack come
  from `cuobjdump --dump-resource-usage` of the object, spills (stores + loads, bytes per thread)
  and static shared memory from `ptxas -v` of the same compile; the register counts of both
  agree (checked). cuobjdump's SHARED column adds the 1 KiB sm_90 reserves per block. Triton
  kernels are the specialisations the ops launch at the shapes below, compiled with
  `triton.compile` for `GPUTarget("cuda", 90, 32)`; their shared memory is what Triton launches
  them with.
* **Occupancy** (H100, per SM): 65,536 registers allocated per warp in units of 256, warps in
  groups of 4; 64 warps; 32 blocks; 228 KiB shared memory (227 KiB per block) plus 1 KiB reserved
  per block. Kernel rows use static shared memory only; op launches add their dynamic shared
  memory (the fp32 accumulator plane of the ss2d kernels).
* **SASS per step** (CUDA scan kernels): the innermost loops that contain a block barrier are the
  per-tile loops (the backward has two: the state sweep and the gradient sweep); the instructions
  on the longest path through each loop body (NOPs excluded), summed and divided by the steps a
  thread owns per tile (`kItems` = 8). Rows for N = 4 / 16 are the kMaxN buckets, their loops
  unrolled for every state.
* **Bytes moved** (CUDA): the kernel lab's emulator runs the real kernels and counts, per warp
  request (one dynamic load/store/atomic of 32 lanes), the distinct 32-byte sectors; bytes moved
  = 32 x sectors, i.e. the L2-to-SM traffic with no credit for L1 hits between requests. For
  today's scan kernels, whose lanes own 8 consecutive steps, the 8 requests of a thread's steps
  touch the same sectors again, so on a GPU much of this traffic would hit L1: read the memory
  term as an upper bound and the issue column as the other limit; a kernel whose requests are
  coalesced (the v2 target, sectors per request near ideal) makes both readings agree.
  Sectors per request are averaged over every request of the op (ideal: 2 for a warp reading 32
  consecutive bf16 values, 4 for fp32). The op is emulated at a scaled-down shape that keeps
  every per-block quantity (the whole map or sequence, N, F, R; 16 channels, so channel-last
  positions are a sector apart as at the real C) and shrinks batch and channels (slp: batch 2,
  32 attributes); each launch's counts are scaled by the ratio of the work units it runs over:
  (b, C) planes for the scan kernels, b for the dB/dC store, b x A for the SLP kernels, A for the
  dq store. Counts grow linearly in these units, so the scaling is exact up to the alignment of
  planes to sectors.
* **Time** per launch = max(bytes moved / {cm.HBM_BW / 1e12:.2f} TB/s, issue, pipe); an op is the
  sum of its launches (launch overhead not counted).
  Issue = warp instructions / ({cm.SMS} SMs x {cm.SCHEDULERS} schedulers x {cm.CLOCK / 1e9:.3f}
  GHz x e), with warp instructions = SASS per step x steps / 32 (whole tiles of 1024 steps per
  sequence, so short maps pay for padding) and e = min(1, resident warps per scheduler /
  {cm.WARPS_TO_HIDE}). Grid-stride helper kernels are charged their bytes only.
* **slp_project** (CUDA): the score and gradient products are cuBLAS GEMMs issued by the binding
  around slp.cu's two row kernels; the emulator runs the kernels, the GEMMs and copies are
  modeled (`kernel_static/slp_model.py`): max(FLOPs at {cm.GEMM_EFFICIENCY:.0%} of the H100 SXM
  dense peak, bytes at {cm.HBM_BW / 1e12:.2f} TB/s), peaks bf16 {cm.PEAK_FLOPS["bf16"] / 1e12:.0f},
  tf32 {cm.PEAK_FLOPS["tf32"] / 1e12:.0f}, fp32 {cm.PEAK_FLOPS["fp32"] / 1e12:.0f} TFLOP/s; their
  rows carry bytes but no requests. The einsum form (`zeromamba.reference.slp_project`) is modeled
  op by op the same way: `einsum` as the reference runs it (fp32 math, SGEMM), `einsum-bf16` with
  every op in bf16 on tensor cores. Saved = the output plus what autograd keeps for the backward
  beyond the caller's inputs.
* **Fraction of copy bandwidth** = (bytes min / 3.35 TB/s) / modeled time: the fraction of the
  copy roofline the op would reach on the minimal-bytes count of docs/design.md §5.1. A measured device copy
  reaches ~90% of 3.35 TB/s, so measured fractions of *measured* copy bandwidth will read higher.
* **Bytes moved** (Triton): the ops' launchers run at a scaled-down shape (batch 1, the CUDA
  model's channel counts, doubled until every launch has the real launch's tile sizes and flags)
  in Triton's CPU interpreter, whose load, store and atomic entry points are wrapped to record
  each memory instruction's block of addresses and mask per program. The instruction's source
  line finds it in the kernel's sm_90 TTGIR, whose `#blocked` / `#linear` / `#slice` layout
  gives the (warp, lane, register) of every element; a warp request is one vector register group
  (at most 16 bytes, when contiguous) of a warp's lanes, and moves its distinct 32-byte sectors,
  the CUDA model's rule (no L1/L2 reuse credit). Loads issue from every thread holding an
  element (replicated blocks load once per replica); stores and atomics once per element.
  "x ideal" after sectors/request is sectors over the distinct bytes' sectors (1.00x: no wasted
  transfer; 8x: an fp32 column read). Instructions whose layout the TTGIR doesn't give use
  Triton's default layout and are listed in `kernels.json` (`approximated_layouts`). A block
  the compiler loads in two layouts counts twice. Counts scale per launch by real over emulated
  program count; along grid axes of more than 8 programs only the first, last and evenly spaced
  inner programs run, weighted by the programs they stand for. The torch calls of the launcher
  (zeroed accumulators, partial-sum reductions, casts) are charged their streaming bytes, seen
  on meta tensors at the real shape; its matrix products (the SLP's score and gradient GEMMs)
  are charged as the CUDA binding's: max(FLOPs at the GEMM efficiency, bytes).
* **Time** (Triton) per launch = max(bytes moved / 3.35 TB/s, issue), the issue limit as for
  CUDA with every warp issuing each SASS instruction once per program for straight-line kernels
  (the scan passes); kernels with loops (the chunk-carry combine, the SLP row kernels) are
  charged their bytes only, so their times are lower bounds.
* Not modeled: L1/L2 hit rates, bank conflicts, atomic contention (atomics are counted, their
  sectors charged), tail effects beyond the resident-warp count, clocks below boost.
"""


def markdown(report: dict) -> str:
    lines = [
        f"# Static kernel report ({report['arch']}): modeled, not measured",
        "",
        (
            f"Date {report['date']}, commit {report['commit']}. No GPU: every figure below comes "
            "from the compiled code (nvcc / Triton for sm_90) and the kernel lab's CPU emulator; "
            f"every time and bandwidth is **modeled, not measured** for an "
            f"{report['device_modeled']}."
        ),
        "",
        "## Ops (bf16 in, fp32 scan outputs; VMamba-S at 448 px, b = 32)",
        "",
        *ops_table(report["ops"]),
        "",
        "## slp_project against the einsum form (modeled, not measured)",
        "",
        *slp_table(report.get("slp_vs_einsum", [])),
        "",
        "## Triton over CUDA, modeled time (target <= 1.5x)",
        "",
        *ratio_table(report["ops"]),
        "",
        "## Kernels (sm_90)",
        "",
        *kernels_table(report["kernels"]),
        "",
        ASSUMPTIONS,
    ]
    return "\n".join(lines) + "\n"
