// The chunked selective-scan kernels behind selective_scan and the fused four-way ss2d_scan.
//
// One thread block scans one sequence at a time: a (batch, channel, direction) triple. The
// sequence is cut into tiles of kTile steps; thread i of the block owns kItems consecutive steps
// of the tile. Per state index n, every thread folds its steps into one affine map
// h -> a*h + b (a = prod exp(dt*A), b = the state reached from h = 0), a block-wide scan of these
// maps gives each thread the state entering its steps, and a second sweep over its steps
// produces the states themselves. The state leaving a tile is carried into the next tile in
// registers, so any length works with the same code.
//
// ss2d: direction k reads its inputs at the spatial position of its step t (docs/design.md §2.2)
// directly, so the cross-scan copies never exist; the forward block owns one (b, c) plane, runs
// the four directions one after another and adds their outputs into one fp32 plane (shared
// memory when it fits, else global workspace), written once at the end.
//
// Backward (per sequence), with g_t = dL/dh_t flowing backwards:
//   g_t      = C_t * dy_t + a_{t+1} * g_{t+1},  a_t = exp(dt_t * A)      (g after the end = 0)
//   dB_t    += g_t * dt_t * u_t                  (summed over the channels sharing B)
//   dC_t    += dy_t * h_t
//   du_t     = D * dy_t + sum_n g_t * dt_t * B_t
//   d(dt_t)  = sum_n g_t * (A * a_t * h_{t-1} + B_t * u_t)
//   dA      += g_t * dt_t * a_t * h_{t-1}
//   dD      += dy_t * u_t
//   ddelta_t = d(dt_t) * sigmoid(z_t) with z_t = delta_t + bias (softplus; 1 above 20 or without)
//   ddelta_bias += ddelta_t
// The reverse recurrence is scanned in the variable q_t = a_t * g_t (what step t passes to step
// t-1): q_t = a_t * (C_t dy_t + q_{t+1}), an affine map of q_{t+1}, so the same block scan runs
// from the last thread to the first. Tiles are visited last to first; the forward states a tile
// needs are recomputed from its entering state, which a first forward sweep stored per tile.
#pragma once

#include "common.cuh"

namespace zeromamba {
namespace cuda {
namespace scan {

// The kernels address a (b, c) plane of every tensor with 32-bit offsets (h*s_h + w*s_w, plus
// n*s_n for B and C): true when the largest such offset fits.
inline bool plane_fits_32_bits(const ScanParams& p) {
  const auto extent = [&](int64_t sh, int64_t sw) {
    return (p.H - 1) * (sh < 0 ? -sh : sh) + (p.W - 1) * (sw < 0 ? -sw : sw);
  };
  const int64_t bc_sn = p.bc_sn < 0 ? -p.bc_sn : p.bc_sn;
  const int64_t limit = 2147483647;
  return extent(p.u_sh, p.u_sw) < limit && extent(p.dl_sh, p.dl_sw) < limit &&
         extent(p.bc_sh, p.bc_sw) + (p.d_state - 1) * bc_sn < limit;
}

// Elements u (x, y, du) spans from its first one (non-negative strides): the size of an ss2d
// accumulator in global workspace, which the kernels address at u's own offsets.
inline int64_t u_extent(const ScanParams& p) {
  return 1 + (p.batch - 1) * p.u_sb + (p.channels - 1) * p.u_sc + (p.H - 1) * p.u_sh +
         (p.W - 1) * p.u_sw;
}

// ss2d with unit channel stride (channel-last) runs the lanes-on-channels kernels.
inline bool lanes_on_channels(const ScanParams& p) {
  return p.n_dir == 4 && p.u_sc == 1 && p.channels > 1;
}

// f(T{}, std::integral_constant<int, kMaxN>{}) for the element type and d_state bucket of p
// (common.cuh), after the 32-bit plane check: the dispatch of every scan launcher.
template <typename F>
cudaError_t dispatch_scan(const ScanParams& p, F&& f) {
  if (!plane_fits_32_bits(p)) return cudaErrorInvalidValue;
  return dispatch_d_state(p.d_state, [&](auto max_n) {
    return dispatch_dtype(p.dtype, [&](auto tag) { return f(tag, max_n); });
  });
}

// Tuning of the scan kernels for one d_state bucket (docs/design.md §4.4): every kernel and launch
// reads its block shape from here, so a per-bucket choice is one specialisation. Buckets:
// kMaxN = 1, 4 and kMaxDState (dispatch_d_state in common.cuh).
template <int kMaxN_>
struct ScanTraits {
  static_assert(kMaxN_ >= 1 && kMaxN_ <= kMaxDState, "d_state bucket");
  static constexpr int kMaxN = kMaxN_;  // the kernels serve d_state <= kMaxN
  static constexpr int kThreads = 128;
  static constexpr int kItems = 8;  // consecutive steps per thread per tile
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kTile = kThreads * kItems;
  // Channels per block of the channel-last ss2d kernels (lanes on channels): 16 bf16 channels are
  // one 32-byte sector per step, so a warp's request is two whole sectors; the block's
  // kThreads / kLaneChannels segments of kItems steps make a tile of kLaneTile steps.
  static constexpr int kLaneChannels = 16;
  static constexpr int kLaneTile = kThreads / kLaneChannels * kItems;
  // Blocks per SM the register allocation must allow (__launch_bounds__). Forward N = 1: 4 x 4
  // warps = 25% occupancy, the four warps per scheduler the scan's serial chains need to hide
  // latency (<= 128 registers); larger N would spill at 128 and gets 3. Backward: 3 for N = 1
  // (<= 168 registers; at 128 it spills ~120 bytes per thread), 2 for larger N.
  static constexpr int kFwdMinBlocks = kMaxN_ == 1 ? 4 : 3;
  static constexpr int kBwdMinBlocks = kMaxN_ == 1 ? 3 : 2;
};

// An fp32 (H*W) plane up to this many elements is accumulated in shared memory (96 KiB).
constexpr int kAccSmemMaxFloats = 24576;

// Spatial strides of one tensor in the walk order of a direction: the offset of the step at
// inner coordinate i and outer coordinate o is i * inner + o * outer (32-bit: a (b, c) plane's
// extent fits, checked by the launchers).
struct WalkStrides {
  int inner, outer;
  __device__ __forceinline__ WalkStrides(int64_t sh, int64_t sw, bool column)
      : inner(static_cast<int>(column ? sh : sw)), outer(static_cast<int>(column ? sw : sh)) {}
  // Unsigned (strides and coordinates are never negative): the address is then one wide
  // multiply-add of the offset onto the plane's base pointer.
  __device__ __forceinline__ unsigned at(int i, int o) const {
    return static_cast<unsigned>(i * inner + o * outer);
  }
};

// The positions of one direction's steps (docs/design.md §2.2): row directions (0, 2) walk w
// inside h, column directions (1, 3) h inside w; 2 and 3 run backwards. With H = 1 and W = L it
// is the identity t -> (0, t) of a plain sequence. One division places a thread's first step;
// each further step is an add and a wrap test.
struct Walk {
  int n_inner, n_outer, s;  // extents of the inner and outer coordinates; +1 forward, -1 backward
  bool column, reverse;
  __device__ __forceinline__ Walk(int dir, int H, int W)
      : n_inner(dir & 1 ? H : W),
        n_outer(dir & 1 ? W : H),
        s(dir >= 2 ? -1 : 1),
        column(dir & 1),
        reverse(dir >= 2) {}
  // Consecutive steps are consecutive elements of a tensor with these strides (a contiguous
  // plane walked row by row, or a plain sequence).
  __device__ __forceinline__ bool contiguous(const WalkStrides& st) const {
    return st.inner == 1 && (st.outer == n_inner || n_outer == 1);
  }
  __device__ __forceinline__ void place(int t, int L, int& i, int& o) const {
    if (reverse) t = L - 1 - t;
    o = t / n_inner;
    i = t - o * n_inner;
  }
  __device__ __forceinline__ void next(int& i, int& o) const {
    i += s;
    if (static_cast<unsigned>(i) >= static_cast<unsigned>(n_inner)) {
      i -= s * n_inner;
      o += s;
    }
  }
};

// The sequence a thread scans: (batch b, channel c, direction dir), with its walk and the
// spatial strides of its tensors in walk order. A thread past the last channel (channel-last
// kernels, c >= channels) is inactive: it reads the last channel's sequence and its steps are
// all padding.
template <typename T>
struct Sequence {
  bool active;
  int c;           // the channel read (the last one when inactive)
  int row, group;  // row of A / D / delta_bias; group of B / C
  const T* u;
  const T* delta;
  const T* B;
  const T* C;
  float D, bias;
  Walk walk;
  WalkStrides u_st, dl_st, bc_st, pos_st;  // u (y, dy, du); delta; B / C; the (H, W) plane
  bool u_contiguous, dl_contiguous, bc_contiguous;  // Walk::contiguous of each

  __device__ __forceinline__ Sequence(const ScanParams& p, int b, int c_, int dir)
      : walk(dir, p.H, p.W),
        u_st(p.u_sh, p.u_sw, dir & 1),
        dl_st(p.dl_sh, p.dl_sw, dir & 1),
        bc_st(p.bc_sh, p.bc_sw, dir & 1),
        pos_st(p.W, 1, dir & 1) {
    active = c_ < p.channels;
    c = active ? c_ : p.channels - 1;
    row = dir * p.channels + c;
    group = p.n_dir == 4 ? dir : c / (p.channels / p.groups);
    u = opaque(static_cast<const T*>(p.u) + b * p.u_sb + c * p.u_sc);
    delta = opaque(static_cast<const T*>(p.delta) + b * p.dl_sb + dir * p.dl_sk + c * p.dl_sc);
    B = opaque(static_cast<const T*>(p.B) + b * p.bc_sb + group * p.bc_sg);
    C = opaque(static_cast<const T*>(p.C) + b * p.bc_sb + group * p.bc_sg);
    D = p.D != nullptr ? p.D[row] : 0.f;
    bias = p.delta_bias != nullptr ? p.delta_bias[row] : 0.f;
    set_contiguity();
  }

  // Column k of a column direction's walk, in the direction's order (k = 0 is the column its
  // first step visits), as a sequence of its own: the H steps of that column, pointers moved onto
  // it (the lanes-on-columns forward, docs/design.md §4.4). A k past the last column gives an
  // inactive sequence (on the last column read). Offsets inside the column then stay those of
  // the plane minus the column's start: Accumulator::column and column_offset move the outputs.
  __device__ __forceinline__ Sequence column(int k, int W) const {
    Sequence s = *this;
    s.active = active && k < W;
    const int w = column_w(k < W ? k : W - 1, W);
    s.u = opaque(u + w * u_st.outer);
    s.delta = opaque(delta + w * dl_st.outer);
    s.B = opaque(B + w * bc_st.outer);
    s.C = opaque(C + w * bc_st.outer);
    s.walk.n_outer = 1;
    s.set_contiguity();
    return s;
  }
  // The spatial column w of the k-th column in the walk's order.
  __device__ __forceinline__ int column_w(int k, int W) const {
    return walk.reverse ? W - 1 - k : k;
  }

 private:
  __device__ __forceinline__ void set_contiguity() {
    u_contiguous = walk.contiguous(u_st);
    dl_contiguous = walk.contiguous(dl_st);
    bc_contiguous = walk.contiguous(bc_st);
  }
};

// The per-sequence inputs of one thread's kItems steps of a tile (its segment); steps
// e >= n_valid are padding: past the end of the sequence, or all of an inactive thread's.
// Padding steps sit on the segment's last step in the sequence (the first step of the sequence
// for a segment with none), so every load is in bounds and needs no branch; their values are
// replaced by zeros.
template <typename T, int kItems>
struct Steps {
  int i[kItems], o[kItems];  // walk coordinates of each step
  float u[kItems], dt[kItems], z[kItems];
  int first;    // the sequence step of e = 0 (when n_steps > 0)
  int n_steps;  // steps of the segment inside the sequence (alike for every channel)
  int n_valid;  // n_steps, 0 when the thread is inactive

  __device__ __forceinline__ bool valid(int e) const { return e < n_valid; }
  __device__ __forceinline__ unsigned u_offset(const Sequence<T>& q, int e) const {
    return q.u_st.at(i[e], o[e]);
  }
  __device__ __forceinline__ unsigned dl_offset(const Sequence<T>& q, int e) const {
    return q.dl_st.at(i[e], o[e]);
  }
  __device__ __forceinline__ unsigned bc_offset(const Sequence<T>& q, int e) const {
    return q.bc_st.at(i[e], o[e]);
  }
  __device__ __forceinline__ unsigned position(const Sequence<T>& q, int e) const {
    return q.pos_st.at(i[e], o[e]);
  }
  // The steps' offsets in a tensor with strides st (contiguous: Walk::contiguous of st).
  __device__ __forceinline__ Run<kItems> run(const Sequence<T>& q, const WalkStrides& st,
                                             bool contiguous) const {
    Run<kItems> r;
#pragma unroll
    for (int e = 0; e < kItems; ++e) r.off[e] = st.at(i[e], o[e]);
    r.consecutive = contiguous && n_valid == kItems;
    r.descending = q.walk.reverse;
    return r;
  }
  __device__ __forceinline__ Run<kItems> u_run(const Sequence<T>& q) const {
    return run(q, q.u_st, q.u_contiguous);
  }
  __device__ __forceinline__ Run<kItems> dl_run(const Sequence<T>& q) const {
    return run(q, q.dl_st, q.dl_contiguous);
  }
  __device__ __forceinline__ Run<kItems> bc_run(const Sequence<T>& q) const {
    return run(q, q.bc_st, q.bc_contiguous);
  }

  // The segment's steps of state n as one affine map h -> a*h + b (dt = u = 0 on padding steps
  // leave h alone); A2n = A[n] * log2(e).
  __device__ __forceinline__ Affine map_of(const ScanParams& p, const Sequence<T>& q, int n,
                                           float A2n) const {
    float Bv[kItems];
    load_run(opaque(q.B + n * p.bc_sn), bc_run(q), Bv);
    Affine agg = {1.f, 0.f};
#pragma unroll
    for (int e = 0; e < kItems; ++e) agg = compose(agg, {exp2f(dt[e] * A2n), dt[e] * Bv[e] * u[e]});
    return agg;
  }

  // B and C of state n at the steps (bc: bc_run).
  __device__ __forceinline__ void load_bc(const ScanParams& p, const Sequence<T>& q, int n,
                                          const Run<kItems>& bc, float (&Bv)[kItems],
                                          float (&Cv)[kItems]) const {
    load_run(opaque(q.B + n * p.bc_sn), bc, Bv);
    load_run(opaque(q.C + n * p.bc_sn), bc, Cv);
  }

  // t0: the tile's first step, 64-bit so that the last tile of a sequence near 2^31 steps does
  // not overflow; seg: the thread's segment of the tile.
  __device__ __forceinline__ void load(const ScanParams& p, const Sequence<T>& q, int64_t t0,
                                       int L, int seg) {
    const int64_t first_step = t0 + static_cast<int64_t>(seg) * kItems;
    n_steps = static_cast<int>(first_step >= L ? 0 : (L - first_step < kItems ? L - first_step : kItems));
    n_valid = q.active ? n_steps : 0;
    first = n_steps > 0 ? static_cast<int>(first_step) : 0;
    int ii = 0, oo = 0;
    q.walk.place(first, L, ii, oo);
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      i[e] = ii;
      o[e] = oo;
      if (e + 1 < n_steps) q.walk.next(ii, oo);
    }
    float us[kItems], deltas[kItems];
    load_run(q.u, u_run(q), us);
    load_run(q.delta, dl_run(q), deltas);
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      const float ue = us[e];
      const float ze = deltas[e] + q.bias;
      const float dte = p.delta_softplus ? softplus(ze) : ze;
      // exp(0 * A) = 1 and dt * B * u = 0: padding steps leave the state alone
      u[e] = valid(e) ? ue : 0.f;
      z[e] = valid(e) ? ze : 0.f;
      dt[e] = valid(e) ? dte : 0.f;
    }
  }
};

// The ss2d accumulator of one sequence's outputs (y, dx): the four directions add into an fp32
// plane, in shared memory indexed by position (h*W + w), or in global workspace at the offsets of
// the output itself (32-bit inside its (b, c) plane). Direction 0 stores, 1 and 2 add; with the
// plane in global memory direction 3 adds and writes the sum to the output in its dtype (one
// read-modify-write fewer than a final pass); in shared memory a final pass stores the plane.
struct Accumulator {
  float* plane;
  bool in_smem;

  // The accumulator of spatial column w (Sequence::column): its positions h*W in shared memory,
  // its offsets h*s_h (s_w: u's column stride) in the workspace.
  __device__ __forceinline__ Accumulator column(int w, int s_w) const {
    return {plane + (in_smem ? w : w * s_w), in_smem};
  }

  template <typename T, int kItems, typename Out>
  __device__ __forceinline__ void add(const Sequence<T>& q, const Steps<T, kItems>& s, int dir,
                                      const float (&v)[kItems], Out&& out) const {
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      if (!s.valid(e)) continue;
      const unsigned i = in_smem ? s.position(q, e) : s.u_offset(q, e);
      const float sum = dir == 0 ? v[e] : plane[i] + v[e];  // each direction visits i once
      if (dir == 3 && !in_smem) {
        out(i, sum);
      } else {
        plane[i] = sum;
      }
    }
  }
};

// The forward of one sequence along chains of kC threads (as scan_fwd_block), tile by tile from
// the states in `carry` (left as the states leaving the sequence); emit(s, y) writes each tile's
// outputs.
template <typename T, int kMaxN, int kC, typename Emit>
__device__ __forceinline__ void scan_fwd_tiles(const ScanFwdParams& p, const Sequence<T>& seq,
                                               int L, int seg, const float (&A2)[kMaxN],
                                               float (&carry)[kMaxN], Affine* scan_smem,
                                               Emit&& emit) {
  using Traits = ScanTraits<kMaxN>;
  constexpr int kItems = Traits::kItems, kTile = Traits::kThreads / kC * kItems;
  const int N = p.d_state;
  for (int64_t t0 = 0; t0 < L; t0 += kTile) {
    Steps<T, kItems> s;
    s.load(p, seq, t0, L, seg);
    float y[kItems], dtu[kItems];
    const Run<kItems> bc = s.bc_run(seq);
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      y[e] = seq.D * s.u[e];
      dtu[e] = s.dt[e] * s.u[e];
    }
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) {
      if (n < N) {
        float a[kItems], bu[kItems], Bv[kItems], Cv[kItems];
        s.load_bc(p, seq, n, bc, Bv, Cv);
        Affine agg = {1.f, 0.f};
#pragma unroll
        for (int e = 0; e < kItems; ++e) {
          a[e] = exp2f(s.dt[e] * A2[n]);
          bu[e] = dtu[e] * Bv[e];  // dtu = 0 on padding steps
          agg = compose(agg, {a[e], bu[e]});
        }
        Affine total;
        const Affine before =
            block_exclusive_scan<Traits::kThreads, false, kC>(agg, total, scan_smem);
        float h = before.a * carry[n] + before.b;
#pragma unroll
        for (int e = 0; e < kItems; ++e) {
          h = a[e] * h + bu[e];
          y[e] += Cv[e] * h;  // padding steps are never stored
        }
        carry[n] = total.a * carry[n] + total.b;
      }
    }
    emit(s, y);
  }
}

// Channel-first ss2d column directions, lanes on columns (docs/design.md §4.4): the block walks
// the plane in bands of kC columns in the direction's order; chain k (threads k mod kC) scans the
// k-th column of the band as a sequence of H steps, so a warp's load of one step is kC adjacent
// elements of two rows (two sectors in bf16) instead of 32 rows. Columns chain end to start: a
// first sweep folds each column into one affine map per state (reading u, delta and B), a scan
// of the kC maps across the chains gives each column its entering state, and the second sweep
// is scan_fwd_tiles from those states.
template <typename T, int kMaxN, int kC>
__device__ __forceinline__ void scan_fwd_columns(const ScanFwdParams& p, const Sequence<T>& plane,
                                                 const float (&A2)[kMaxN], const Accumulator& acc,
                                                 void* y_plane, Affine* scan_smem) {
  using Traits = ScanTraits<kMaxN>;
  constexpr int kItems = Traits::kItems, kTile = Traits::kThreads / kC * kItems;
  const int chain = static_cast<int>(threadIdx.x % kC), seg = static_cast<int>(threadIdx.x / kC);
  const int N = p.d_state;
  float band_carry[kMaxN];
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) band_carry[n] = 0.f;
  for (int k0 = 0; k0 < p.W; k0 += kC) {
    const Sequence<T> col = plane.column(k0 + chain, p.W);
    Affine map[kMaxN];
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) map[n] = {1.f, 0.f};
    for (int64_t t0 = 0; t0 < p.H; t0 += kTile) {
      Steps<T, kItems> s;
      s.load(p, col, t0, p.H, seg);
#pragma unroll
      for (int n = 0; n < kMaxN; ++n) {
        if (n < N) {
          Affine total;
          block_exclusive_scan<Traits::kThreads, false, kC>(s.map_of(p, col, n, A2[n]), total,
                                                            scan_smem);
          map[n] = compose(map[n], total);
        }
      }
    }
    float carry[kMaxN];
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) {
      Affine all;
      const Affine before = group_exclusive_scan<kC>(map[n], all);
      carry[n] = before.a * band_carry[n] + before.b;
      band_carry[n] = all.a * band_carry[n] + all.b;
    }
    const int w = plane.column_w(k0 + chain < p.W ? k0 + chain : p.W - 1, p.W);
    const Accumulator col_acc = acc.column(w, col.u_st.outer);
    const unsigned y_off = static_cast<unsigned>(w * col.u_st.outer);
    scan_fwd_tiles<T, kMaxN, kC>(p, col, p.H, seg, A2, carry, scan_smem, [&](const auto& s,
                                                                          const auto& y) {
      col_acc.add(col, s, plane.walk.reverse ? 3 : 1, y, [&](unsigned i, float v) {
        store_as<T>(y_plane, y_off + i, v, p.y_float32);
      });
    });
  }
}

// Blocks on x: batch * ceil(channels / kC); block x scans channels kC * (x % groups_c) + k,
// k < kC, of batch x / groups_c (gridDim.y would cap the batch at 65,535). kC = 1: one plane
// per block, the threads on consecutive steps of one sequence (channel-first ss2d and
// selective_scan; kColumns: the channel-first ss2d kernel, whose column directions run
// scan_fwd_columns). kC = kLaneChannels: channel-last ss2d, lane k of a group of kC lanes on
// channel k, so a warp's load of one step is contiguous. Dynamic shared memory: H*W floats when
// the ss2d plane accumulates there (acc_in_smem; kC = 1 only), else none. scan_smem: kWarps * kC
// entries, kWarps * kLaneChannels with kColumns.
template <typename T, int kMaxN, int kC, bool kColumns = false>
__device__ __forceinline__ void scan_fwd_block(const ScanFwdParams& p, bool acc_in_smem,
                                               float* acc_smem, Affine* scan_smem) {
  using Traits = ScanTraits<kMaxN>;
  const int groups_c = (p.channels + kC - 1) / kC;
  const int b = static_cast<int>(blockIdx.x / groups_c);
  const int c = static_cast<int>(blockIdx.x % groups_c) * kC + static_cast<int>(threadIdx.x % kC);
  const int seg = static_cast<int>(threadIdx.x / kC);
  const int L = p.H * p.W, N = p.d_state;
  const bool four = p.n_dir == 4;
  const int c_read = c < p.channels ? c : p.channels - 1;
  const int64_t u_base = b * p.u_sb + c_read * p.u_sc;
  const Accumulator acc{acc_in_smem ? acc_smem : p.workspace + u_base, acc_in_smem};
  void* const y_plane =
      opaque(static_cast<char*>(p.y) + u_base * (p.y_float32 ? sizeof(float) : sizeof(T)));

  for (int dir = 0; dir < p.n_dir; ++dir) {
    const Sequence<T> seq(p, b, c, dir);
    float A2[kMaxN], carry[kMaxN];
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) {
      A2[n] = n < N ? p.A[seq.row * N + n] * kLog2e : 0.f;  // exp(dt*A) = exp2(dt*A*log2 e)
      carry[n] = 0.f;
    }
    if constexpr (kColumns) {
      if (dir & 1) {
        scan_fwd_columns<T, kMaxN, Traits::kLaneChannels>(p, seq, A2, acc, y_plane, scan_smem);
        __syncthreads();  // the next direction reads acc at positions other threads wrote
        continue;
      }
    }
    scan_fwd_tiles<T, kMaxN, kC>(p, seq, L, seg, A2, carry, scan_smem, [&](const auto& s,
                                                                         const auto& y) {
      if (four) {
        acc.add(seq, s, dir, y,
                [&](unsigned i, float v) { store_as<T>(y_plane, i, v, p.y_float32); });
      } else if (p.y_float32) {
        store_run(static_cast<float*>(y_plane), s.u_run(seq), y, s.n_valid);
      } else {
        store_run(static_cast<T*>(y_plane), s.u_run(seq), y, s.n_valid);
      }
    });
    __syncthreads();  // the next direction reads acc at positions other threads wrote
  }
  if (four && acc_in_smem) {
    for (int i = threadIdx.x; i < L; i += Traits::kThreads) {
      const int h = i / p.W, w = i - h * p.W;
      store_as<T>(y_plane, static_cast<int>(h * p.u_sh + w * p.u_sw), acc_smem[i], p.y_float32);
    }
  }
}

template <typename T, int kMaxN>
__global__ void __launch_bounds__(ScanTraits<kMaxN>::kThreads, ScanTraits<kMaxN>::kFwdMinBlocks)
    scan_fwd_kernel(ScanFwdParams p, bool acc_in_smem) {
  ZM_DYNAMIC_SHARED(float, acc_smem);
  __shared__ Affine scan_smem[ScanTraits<kMaxN>::kWarps];
  scan_fwd_block<T, kMaxN, 1>(p, acc_in_smem, acc_smem, scan_smem);
}

// Channel-first ss2d forward: scan_fwd_kernel's plane per block, the column directions with
// lanes on columns (scan_fwd_columns: kLaneChannels chains).
template <typename T, int kMaxN>
__global__ void __launch_bounds__(ScanTraits<kMaxN>::kThreads, ScanTraits<kMaxN>::kFwdMinBlocks)
    scan_fwd_cf_kernel(ScanFwdParams p, bool acc_in_smem) {
  ZM_DYNAMIC_SHARED(float, acc_smem);
  __shared__ Affine scan_smem[ScanTraits<kMaxN>::kWarps * ScanTraits<kMaxN>::kLaneChannels];
  scan_fwd_block<T, kMaxN, 1, true>(p, acc_in_smem, acc_smem, scan_smem);
}

// Launches scan_fwd_cf_kernel for p's dtype and d_state bucket on `blocks` blocks with `smem`
// bytes of dynamic shared memory (the plane, when acc_in_smem). Defined in its own file
// (scan_fwd_cf.cu) so that it compiles in parallel with scan_fwd.cu.
cudaError_t launch_fwd_cf(const ScanFwdParams& p, bool acc_in_smem, int smem, unsigned blocks);

// Channel-last ss2d forward: lanes on channels (scan_fwd_block with kC = kLaneChannels).
template <typename T, int kMaxN>
__global__ void __launch_bounds__(ScanTraits<kMaxN>::kThreads, ScanTraits<kMaxN>::kFwdMinBlocks)
    scan_fwd_cl_kernel(ScanFwdParams p) {
  using Traits = ScanTraits<kMaxN>;
  __shared__ Affine scan_smem[Traits::kWarps * Traits::kLaneChannels];
  scan_fwd_block<T, kMaxN, Traits::kLaneChannels>(p, false, nullptr, scan_smem);
}

// Where the backward puts du / dx (BwdPlan::dx_mode).
enum class DxMode : int {
  kDirect,  // each job stores its sequence's du (selective_scan)
  kPlane,   // ss2d: the four directions of a channel (consecutive jobs) add into its Accumulator
};

// How the backward kernel maps blocks to sequences and where its results go; computed on the
// host (scan_bwd.cu) and passed by value. The grid has grid_x * batch blocks on x; block
// b * grid_x + x runs n_jobs sequences of batch b, one after another; job j of chain k scans
// channel c = x*c_blk + j / n_dir + k in direction j % n_dir.
struct BwdPlan {
  bool lanes_on_channels;  // scan_bwd_cl_kernel (channel-last ss2d): chains = kLaneChannels
  int chains;              // chains of threads per block (block_exclusive_scan), 1 or kLaneChannels
  int grid_x, n_jobs, c_blk;
  int n_tiles;
  DxMode dx_mode;
  bool acc_in_smem;
  bool bc_atomic;  // dB/dC: fp32 atomics (several blocks share a group) or plain adds (one does)
  // dB then dC, fp32 (bc_slices, b, groups, N, L) in walk order, zeroed: deterministic ss2d gives
  // each block of a batch its own slice (summed in order by bc_grad_store_kernel), else 1 slice
  int bc_slices;
  int64_t dbc_off, dbc_size;
  int64_t param_off;          // per (b, row): N dA partials, dD, ddelta_bias
  int64_t carry_off;          // per block: the state entering each tile
  int64_t dx_off;
  int64_t total;
  int smem_bytes;
};

// The threads of a block form kC chains as in scan_fwd_block (kC > 1: lanes on channels, the
// channel-last ss2d plan); chain k of job j scans channel x*c_blk + j*c_job + k.
template <typename T, int kMaxN, int kC>
__device__ __forceinline__ void scan_bwd_block(const ScanBwdParams& p, const BwdPlan& plan,
                                               float* acc_smem, Affine* scan_smem,
                                               float* sum_smem) {
  using Traits = ScanTraits<kMaxN>;
  constexpr int kItems = Traits::kItems, kThreads = Traits::kThreads;
  constexpr int kTile = kThreads / kC * kItems;
  const int x = static_cast<int>(blockIdx.x % plan.grid_x);
  const int b = static_cast<int>(blockIdx.x / plan.grid_x);
  const int chain = static_cast<int>(threadIdx.x % kC), seg = static_cast<int>(threadIdx.x / kC);
  const int L = p.H * p.W, N = p.d_state, rows = p.n_dir * p.channels;
  float* carry_ws = p.workspace + plan.carry_off +
                    static_cast<int64_t>(blockIdx.x) * plan.n_tiles * N * kC + chain;
  float* dB_ws = p.workspace + plan.dbc_off;
  float* dC_ws = dB_ws + plan.dbc_size;

  // the last block of a batch may have fewer channels (kC = 1; kC > 1 masks them per lane)
  const int jobs_left = (p.channels - x * plan.c_blk) * p.n_dir;
  const int n_jobs = kC == 1 && jobs_left < plan.n_jobs ? jobs_left : plan.n_jobs;
  const int slice = plan.bc_slices > 1 ? x : 0;
  for (int j = 0; j < n_jobs; ++j) {
    const bool four = p.n_dir == 4;
    const int dir = four ? j & 3 : 0;
    const Sequence<T> seq(p, b, x * plan.c_blk + (four ? j >> 2 : j) + chain, dir);
    const int c = seq.c;
    const int64_t u_base = b * p.u_sb + c * p.u_sc;
    const Accumulator acc{plan.acc_in_smem ? acc_smem : p.workspace + plan.dx_off + u_base,
                          plan.acc_in_smem};
    const char* const dy_plane = opaque(static_cast<const char*>(p.dy) +
                                        u_base * (p.dy_float32 ? sizeof(float) : sizeof(T)));
    T* const du_plane = opaque(static_cast<T*>(p.du) + u_base);
    T* const ddelta_plane =
        opaque(static_cast<T*>(p.ddelta) + b * p.dl_sb + dir * p.dl_sk + c * p.dl_sc);
    const int64_t bc_base =
        (((static_cast<int64_t>(slice) * p.batch + b) * p.groups + seq.group) * N) * L;
    float A[kMaxN], A2[kMaxN], carry[kMaxN];
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) {
      A[n] = n < N ? p.A[seq.row * N + n] : 0.f;
      A2[n] = A[n] * kLog2e;
      carry[n] = 0.f;
    }

    // Sweep 1: the state entering every tile.
    for (int tile = 0; tile < plan.n_tiles; ++tile) {
      if (seg == 0) {
#pragma unroll
        for (int n = 0; n < kMaxN; ++n) {
          if (n < N) carry_ws[(tile * N + n) * kC] = carry[n];
        }
      }
      Steps<T, kItems> s;
      s.load(p, seq, static_cast<int64_t>(tile) * kTile, L, seg);
#pragma unroll
      for (int n = 0; n < kMaxN; ++n) {
        if (n < N) {
          Affine total;
          block_exclusive_scan<kThreads, false, kC>(s.map_of(p, seq, n, A2[n]), total, scan_smem);
          carry[n] = total.a * carry[n] + total.b;
        }
      }
    }
    __syncthreads();  // carry_ws written by the first segment is read by all

    // Sweep 2: tiles last to first.
    float q_carry[kMaxN], dA_part[kMaxN];
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) q_carry[n] = dA_part[n] = 0.f;
    float dD_part = 0.f, dbias_part = 0.f;
    for (int tile = plan.n_tiles - 1; tile >= 0; --tile) {
      Steps<T, kItems> s;
      s.load(p, seq, static_cast<int64_t>(tile) * kTile, L, seg);
      float dy[kItems], du[kItems], ddt[kItems], dtu[kItems];
      const Run<kItems> bc = s.bc_run(seq);
      if (p.dy_float32) {
        load_run(reinterpret_cast<const float*>(dy_plane), s.u_run(seq), dy);
      } else {
        load_run(reinterpret_cast<const T*>(dy_plane), s.u_run(seq), dy);
      }
#pragma unroll
      for (int e = 0; e < kItems; ++e) {
        dy[e] = s.valid(e) ? dy[e] : 0.f;
        du[e] = seq.D * dy[e];
        ddt[e] = 0.f;
        dtu[e] = s.dt[e] * s.u[e];
      }
#pragma unroll
      for (int n = 0; n < kMaxN; ++n) {
        if (n < N) {
          float a[kItems], Bv[kItems], Cv[kItems], h_prev[kItems], cdy[kItems];
          s.load_bc(p, seq, n, bc, Bv, Cv);
          Affine agg = {1.f, 0.f};
#pragma unroll
          for (int e = 0; e < kItems; ++e) {
            Bv[e] = s.valid(e) ? Bv[e] : 0.f;
            cdy[e] = s.valid(e) ? Cv[e] * dy[e] : 0.f;
            a[e] = exp2f(s.dt[e] * A2[n]);
            agg = compose(agg, {a[e], dtu[e] * Bv[e]});
          }
          Affine total;
          const Affine before = block_exclusive_scan<kThreads, false, kC>(agg, total, scan_smem);
          float h = before.a * carry_ws[(tile * N + n) * kC] + before.b;
#pragma unroll
          for (int e = 0; e < kItems; ++e) {
            h_prev[e] = h;
            h = a[e] * h + dtu[e] * Bv[e];
          }
          // Reverse: this thread's steps map q entering from the right to q leaving left.
          Affine ragg = {1.f, 0.f};
#pragma unroll
          for (int e = kItems - 1; e >= 0; --e) ragg = compose(ragg, {a[e], a[e] * cdy[e]});
          Affine rtotal;
          const Affine after = block_exclusive_scan<kThreads, true, kC>(ragg, rtotal, scan_smem);
          float q = after.a * q_carry[n] + after.b;
          float dB[kItems], dC[kItems];
#pragma unroll
          for (int e = kItems - 1; e >= 0; --e) {
            const float g = cdy[e] + q;
            q = a[e] * g;
            const float h_e = a[e] * h_prev[e] + dtu[e] * Bv[e];
            dB[e] = g * dtu[e];
            dC[e] = dy[e] * h_e;
            if (s.valid(e)) {
              du[e] += g * s.dt[e] * Bv[e];
              const float g_ah = g * a[e] * h_prev[e];
              ddt[e] += A[n] * g_ah + g * Bv[e] * s.u[e];
              dA_part[n] += s.dt[e] * g_ah;
            }
          }
          // The workspace is in the walk order of the group's direction: a thread's steps are
          // consecutive floats there whatever the layout (bc_grad_store_kernel maps them back).
          const int64_t at = bc_base + static_cast<int64_t>(n) * L + s.first;
          if constexpr (kC == 1) {
            add_run(dB_ws + at, dB, s.n_valid, plan.bc_atomic);
            add_run(dC_ws + at, dC, s.n_valid, plan.bc_atomic);
          } else {  // the kC channels' sums first: one add per step and block, not per channel
            int item = 0;
            const float dB_sum = group_sum_scatter<kC>(dB, item);
            const float dC_sum = group_sum_scatter<kC>(dC, item);
            if (chain % (kC / kItems) == 0 && item < s.n_steps) {
              add_one(dB_ws + at + item, dB_sum, plan.bc_atomic);
              add_one(dC_ws + at + item, dC_sum, plan.bc_atomic);
            }
          }
          q_carry[n] = rtotal.a * q_carry[n] + rtotal.b;
        }
      }
      float dz[kItems];
#pragma unroll
      for (int e = 0; e < kItems; ++e) {
        dz[e] = p.delta_softplus ? ddt[e] * softplus_grad(s.z[e]) : ddt[e];
        if (!s.valid(e)) continue;
        dbias_part += dz[e];
        dD_part += dy[e] * s.u[e];
      }
      store_run(ddelta_plane, s.dl_run(seq), dz, s.n_valid);
      if (plan.dx_mode == DxMode::kDirect) {
        store_run(du_plane, s.u_run(seq), du, s.n_valid);
      } else {
        acc.add(seq, s, dir, du, [&](unsigned i, float v) { du_plane[i] = from_float<T>(v); });
      }
    }

    // Per-(b, row) partial sums of the parameter gradients; a second kernel adds them over b in
    // a fixed order. block_sum's barriers also order this job's acc / dB writes before the next.
    float* part =
        p.workspace + plan.param_off + (static_cast<int64_t>(b) * rows + seq.row) * (N + 2);
    const bool writes = seg == 0 && seq.active;
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) {
      if (n < N) {
        const float v = block_sum<kThreads, kC>(dA_part[n], sum_smem);
        if (writes) part[n] = v;
      }
    }
    const float dD = block_sum<kThreads, kC>(dD_part, sum_smem);
    const float dbias = block_sum<kThreads, kC>(dbias_part, sum_smem);
    if (writes) {
      part[N] = dD;
      part[N + 1] = dbias;
    }
    // the channel's plane is complete (block_sum's barriers ordered its writes): store it
    if (plan.dx_mode == DxMode::kPlane && plan.acc_in_smem && dir == 3) {
      for (int i = threadIdx.x; i < L; i += kThreads) {
        const int h = i / p.W, w = i - h * p.W;
        du_plane[static_cast<int>(h * p.u_sh + w * p.u_sw)] = from_float<T>(acc_smem[i]);
      }
      __syncthreads();  // before the next channel's direction 0 overwrites the plane
    }
  }
}

template <typename T, int kMaxN>
__global__ void __launch_bounds__(ScanTraits<kMaxN>::kThreads, ScanTraits<kMaxN>::kBwdMinBlocks)
    scan_bwd_kernel(ScanBwdParams p, BwdPlan plan) {
  ZM_DYNAMIC_SHARED(float, acc_smem);
  __shared__ Affine scan_smem[ScanTraits<kMaxN>::kWarps];
  __shared__ float sum_smem[ScanTraits<kMaxN>::kWarps];
  scan_bwd_block<T, kMaxN, 1>(p, plan, acc_smem, scan_smem, sum_smem);
}

// Channel-last ss2d backward: lanes on channels (scan_bwd_block with kC = kLaneChannels).
template <typename T, int kMaxN>
__global__ void __launch_bounds__(ScanTraits<kMaxN>::kThreads, ScanTraits<kMaxN>::kBwdMinBlocks)
    scan_bwd_cl_kernel(ScanBwdParams p, BwdPlan plan) {
  using Traits = ScanTraits<kMaxN>;
  __shared__ Affine scan_smem[Traits::kWarps * Traits::kLaneChannels];
  __shared__ float sum_smem[Traits::kWarps * Traits::kLaneChannels];
  scan_bwd_block<T, kMaxN, Traits::kLaneChannels>(p, plan, nullptr, scan_smem, sum_smem);
}

// Launches scan_bwd_cl_kernel for p's dtype and d_state bucket on `blocks` blocks. Defined in its
// own file (scan_bwd_cl.cu) so that the two backward kernels' instantiations compile in parallel:
// in one file they were the build's critical path.
cudaError_t launch_bwd_cl(const ScanBwdParams& p, const BwdPlan& plan, unsigned blocks);

// fp32 (bc_slices, b, groups, N, L) workspace, L in the walk order of the group's direction ->
// dB and dC in their layout and dtype, the slices added in order.
template <typename T>
__global__ void bc_grad_store_kernel(ScanBwdParams p, BwdPlan plan) {
  const int L = p.H * p.W;
  const int64_t size = plan.dbc_size / plan.bc_slices;
  const float* dB_ws = p.workspace + plan.dbc_off;
  const float* dC_ws = dB_ws + plan.dbc_size;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < size;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t r = i;
    const int t = static_cast<int>(r % L);
    r /= L;
    const int n = static_cast<int>(r % p.d_state);
    r /= p.d_state;
    const int g = static_cast<int>(r % p.groups);
    const int64_t b = r / p.groups;
    // step t of the group's direction (ss2d: group = direction; selective_scan: t = w)
    const Walk walk(p.n_dir == 4 ? g : 0, p.H, p.W);
    int inner, outer;
    walk.place(t, L, inner, outer);
    const int h = walk.column ? inner : outer, w = walk.column ? outer : inner;
    const int64_t o = b * p.bc_sb + g * p.bc_sg + n * p.bc_sn + h * p.bc_sh + w * p.bc_sw;
    float dB = 0.f, dC = 0.f;
    for (int k = 0; k < plan.bc_slices; ++k) {
      dB += dB_ws[k * size + i];
      dC += dC_ws[k * size + i];
    }
    static_cast<T*>(p.dB)[o] = from_float<T>(dB);
    static_cast<T*>(p.dC)[o] = from_float<T>(dC);
  }
}

}  // namespace scan
}  // namespace cuda
}  // namespace zeromamba
