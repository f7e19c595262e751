// The scan kernels proper, included by scan.cpp once per instruction set, inside a namespace that
// defines V (lanes per step) and a `#pragma GCC target` region; so this file has no include guard
// and includes nothing (scan.cpp includes what it needs first). See scan.cpp for the algorithm.
// ZEROMAMBA_AVX (1 or 0, set by scan.cpp per instruction set) enables the AVX intrinsics.

// ---------------------------------------------------------------------------- staging

#if ZEROMAMBA_AVX
// dst row j = column j of the 8 x 8 fp32 block src (rows ss apart; dst rows ds apart), in
// registers: 8 vector loads, 24 shuffles, 8 vector stores.
inline void transpose8(const float* src, int64_t ss, float* dst, int64_t ds) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ss);
  for (int i = 0; i < 8; i += 2) {  // t[i]: columns 0, 1 | 4, 5 of rows i, i + 1 interleaved
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);  // columns 2, 3 | 6, 7
  }
  for (int h = 0; h < 8; h += 4) {  // r[h + c]: column c | c + 4 of rows h .. h + 3
    r[h + 0] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int c = 0; c < 4; ++c) {
    _mm256_storeu_ps(dst + c * ds, _mm256_permute2f128_ps(r[c], r[c + 4], 0x20));
    _mm256_storeu_ps(dst + (c + 4) * ds, _mm256_permute2f128_ps(r[c], r[c + 4], 0x31));
  }
}
#endif

// Copies between a lane tensor and a [p][lane] buffer, converting types. Channel-first lanes are
// planes L apart, so those copies go through 8 x 8 tiles: contiguous reads and contiguous writes
// (fp32 tiles of all V lanes transposed in vector registers where the ISA has AVX).
template <bool kToBuffer, typename buf_t, typename mem_t>
void copy_lanes(buf_t* buf, mem_t* mem, int64_t sc, int64_t sp, int nl, int64_t L) {
  auto move = [](auto& to, const auto& from) {
    to = static_cast<std::decay_t<decltype(to)>>(from);
  };
  if (sc == 1) {  // channel-last: lanes adjacent
    for (int64_t p = 0; p < L; ++p)
      for (int l = 0; l < nl; ++l) {
        if constexpr (kToBuffer) move(buf[p * V + l], mem[p * sp + l]);
        else move(mem[p * sp + l], buf[p * V + l]);
      }
    return;
  }
  constexpr int64_t kTile = 8;
  int64_t p_vec = 0;  // positions before p_vec went through the register transpose
#if ZEROMAMBA_AVX
  if constexpr (std::is_same_v<std::remove_const_t<buf_t>, float> &&
                std::is_same_v<std::remove_const_t<mem_t>, float> && V % kTile == 0) {
    if (sp == 1 && nl == V) {
      p_vec = L / kTile * kTile;
      for (int64_t p0 = 0; p0 < p_vec; p0 += kTile)
        for (int l0 = 0; l0 < V; l0 += kTile) {
          if constexpr (kToBuffer) transpose8(mem + l0 * sc + p0, sc, buf + p0 * V + l0, V);
          else transpose8(buf + p0 * V + l0, V, mem + l0 * sc + p0, sc);
        }
    }
  }
#endif
  for (int64_t p0 = p_vec; p0 < L; p0 += kTile) {
    const int64_t pn = std::min(kTile, L - p0);
    for (int l = 0; l < nl; ++l)
      for (int64_t i = 0; i < pn; ++i) {
        const int64_t p = p0 + i;
        if constexpr (kToBuffer) move(buf[p * V + l], mem[l * sc + p * sp]);
        else move(mem[l * sc + p * sp], buf[p * V + l]);
      }
  }
}

// dst[p * V + l] = t[b, k, c0 + l, p] for l < nl, 0 for the padding lanes.
template <typename acc_t>
void stage_lanes(acc_t* dst, const LaneTensor& t, int64_t b, int64_t k, int64_t c0, int nl,
                 int64_t L) {
  if (nl < V) std::fill(dst, dst + L * V, acc_t(0));
  with_storage_type(t.dtype, [&](auto tag) {
    using src_t = decltype(tag);
    const src_t* src = static_cast<const src_t*>(t.data) + b * t.sb + k * t.sk + c0 * t.sc;
    copy_lanes<true>(dst, src, t.sc, t.sp, nl, L);
  });
}

// t[b, k, c0 + l, p] = src[p * V + l] for l < nl.
template <typename acc_t>
void unstage_lanes(const acc_t* src, const LaneTensor& t, int64_t b, int64_t k, int64_t c0, int nl,
                   int64_t L) {
  with_storage_type(t.dtype, [&](auto tag) {
    using dst_t = decltype(tag);
    dst_t* dst = static_cast<dst_t*>(t.data) + b * t.sb + k * t.sk + c0 * t.sc;
    copy_lanes<false>(src, dst, t.sc, t.sp, nl, L);
  });
}

// dst[p * d_state + n] = t[b, k, g, n, p].
template <typename acc_t>
void stage_states(acc_t* dst, const StateTensor& t, int64_t b, int64_t k, int64_t g,
                  int64_t d_state, int64_t L) {
  with_storage_type(t.dtype, [&](auto tag) {
    using src_t = decltype(tag);
    const src_t* src = static_cast<const src_t*>(t.data) + b * t.sb + k * t.sk + g * t.sg;
    for (int64_t n = 0; n < d_state; ++n)
      for (int64_t p = 0; p < L; ++p)
        dst[p * d_state + n] = static_cast<acc_t>(src[n * t.sn + p * t.sp]);
  });
}

// ---------------------------------------------------------------------------- one direction

// Steps ahead whose buffer rows are prefetched in the walks: a column-order direction strides
// W rows (W * V * 4 bytes) per step through a dozen [p][lane] buffers, which the hardware
// prefetchers do not follow, so each step would otherwise wait on L2.
constexpr int64_t kAhead = 8;


// The per-lane parameters of direction k for lanes c0 .. c0 + nl - 1 (padding lanes get zeros,
// which keep their state at 0 because their u and dy are 0).
template <typename acc_t, int kDState>
struct LaneParams {
  static constexpr int kStates = kDState ? kDState : kMaxDState;
  acc_t A[kStates][V];
  acc_t bias[V];

  LaneParams(const ScanProblem& pb, int64_t k, int64_t c0, int nl, int64_t d_state) {
    const acc_t* Ap = static_cast<const acc_t*>(pb.A);
    const acc_t* bp = static_cast<const acc_t*>(pb.bias);
    for (int l = 0; l < V; ++l) {
      const int64_t row = k * pb.channels + c0 + l;
      for (int64_t n = 0; n < d_state; ++n) A[n][l] = l < nl ? Ap[row * d_state + n] : acc_t(0);
      bias[l] = (l < nl && bp != nullptr) ? bp[row] : acc_t(0);
    }
  }
};

// Before a direction is walked, its transcendentals are computed in one pass over the whole
// [p][lane] buffer (independent elements, so the vector units stay busy), leaving the sequential
// walk only multiply-adds: delta is replaced by dt (after bias and softplus) in place, sig (the
// backward's, when kSig) gets d dt / d delta, and for d_state = 1 a1 gets exp(dt A). The forward
// skips the derivative at compile time: it costs a vector division.
template <bool kSig, typename acc_t, int kDState>
void prepare_direction(acc_t* delta, acc_t* sig, acc_t* a1, const LaneParams<acc_t, kDState>& lp,
                       bool softplus, int64_t L) {
  for (int64_t p = 0; p < L; ++p) {
    acc_t* dt = &delta[p * V];
    if (softplus) {
#pragma omp simd
      for (int l = 0; l < V; ++l) {
        if constexpr (kSig) {
          dt[l] = Math<acc_t>::softplus(dt[l] + lp.bias[l], &sig[p * V + l]);
        } else {
          dt[l] = Math<acc_t>::softplus(dt[l] + lp.bias[l]);
        }
      }
    } else {
#pragma omp simd
      for (int l = 0; l < V; ++l) {
        dt[l] += lp.bias[l];
        if constexpr (kSig) sig[p * V + l] = acc_t(1);
      }
    }
    if constexpr (kDState == 1) {
#pragma omp simd
      for (int l = 0; l < V; ++l) a1[p * V + l] = Math<acc_t>::exp(dt[l] * lp.A[0][l]);
    }
  }
}

// h <- exp(dt A) h + dt u B for the V lanes at one step. For d_state = 1, a1 is the precomputed
// exp(dt A); otherwise it is computed here and kept in a_out when given. The new h goes to h_out
// when given (layouts [n][lane]).
template <typename acc_t, int kDState>
inline void lane_step(acc_t (*h)[V], const acc_t* dt, const acc_t* u, const acc_t* Bp,
                      const LaneParams<acc_t, kDState>& lp, int64_t d_state_rt, const acc_t* a1,
                      acc_t* a_out, acc_t* h_out) {
  const int64_t d_state = kDState ? kDState : d_state_rt;
  for (int64_t n = 0; n < d_state; ++n) {
    const acc_t bn = Bp[n];
    if constexpr (kDState == 1) {
#pragma omp simd
      for (int l = 0; l < V; ++l) h[n][l] = a1[l] * h[n][l] + dt[l] * u[l] * bn;
    } else if (a_out != nullptr) {
#pragma omp simd
      for (int l = 0; l < V; ++l) {
        const acc_t a = Math<acc_t>::exp(dt[l] * lp.A[n][l]);
        h[n][l] = a * h[n][l] + dt[l] * u[l] * bn;
        a_out[n * V + l] = a;
      }
    } else {
#pragma omp simd
      for (int l = 0; l < V; ++l)
        h[n][l] = Math<acc_t>::exp(dt[l] * lp.A[n][l]) * h[n][l] + dt[l] * u[l] * bn;
    }
    if (h_out != nullptr) std::copy(h[n], h[n] + V, h_out + n * V);
  }
}

// Scratch space of one thread.
template <typename acc_t>
struct Buffers {
  std::vector<acc_t> u, delta, acc, a1, Bs, Cs;  // acc: y (forward) or du (backward)
  std::vector<acc_t> dy, dd, sig, hc, ac, hck;    // backward
  // delta holds dt once a direction is prepared; a1 = exp(dt A) when d_state = 1.

  Buffers(int64_t L, int64_t d_state, bool backward, int64_t T, int64_t chunks)
      : u(L * V),
        delta(L * V),
        acc(L * V),
        a1(d_state == 1 ? L * V : 0),
        Bs(L * d_state),
        Cs(L * d_state) {
    if (!backward) return;
    dy.resize(L * V);
    dd.resize(L * V);
    sig.resize(L * V);
    hc.resize(T * d_state * V);
    ac.resize(d_state == 1 ? 0 : T * d_state * V);
    hck.resize(chunks * d_state * V);
  }
};

// Row p of the [p][lane] buffers and of the [p][n] state buffers B, C.
template <typename acc_t>
inline void prefetch_rows(int64_t p, int64_t d_state, const Buffers<acc_t>& buf,
                          std::initializer_list<const acc_t*> lanes) {
  for (const acc_t* b : lanes) __builtin_prefetch(b + p * V);
  __builtin_prefetch(buf.Bs.data() + p * d_state);
  __builtin_prefetch(buf.Cs.data() + p * d_state);
}

struct Split {  // work items (b, g, block of lane groups)
  int64_t lane_groups, blocks;
  int64_t items(const ScanProblem& pb) const { return pb.batch * pb.groups * blocks; }
};

// Sum of D over the n_dir direction rows of each lane (D multiplies the same u in every direction).
template <typename acc_t>
void d_sum(const ScanProblem& pb, int64_t c0, int nl, acc_t* out) {
  const acc_t* D = static_cast<const acc_t*>(pb.D);
  for (int l = 0; l < V; ++l) {
    out[l] = 0;
    if (D == nullptr || l >= nl) continue;
    for (int64_t k = 0; k < pb.n_dir; ++k) out[l] += D[k * pb.channels + c0 + l];
  }
}

// ---------------------------------------------------------------------------- forward

template <typename acc_t, int kDState>
void forward_impl(const ScanProblem& pb, const LaneTensor& y) {
  const int64_t L = pb.L, d_state = kDState ? kDState : pb.d_state;
  const int64_t channels_per_group = pb.channels / pb.groups;
  const int64_t lane_groups = (channels_per_group + V - 1) / V;
  at::parallel_for(0, pb.batch * pb.groups * lane_groups, 1, [&](int64_t begin, int64_t end) {
    Buffers<acc_t> buf(L, d_state, false, 0, 0);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / (pb.groups * lane_groups);
      const int64_t g = (item / lane_groups) % pb.groups;
      const int64_t j = item % lane_groups;
      const int64_t c0 = g * channels_per_group + j * V;
      const int nl = static_cast<int>(std::min<int64_t>(V, channels_per_group - j * V));
      stage_lanes(buf.u.data(), pb.u, b, 0, c0, nl, L);
      acc_t dsum[V];
      d_sum(pb, c0, nl, dsum);
      for (int64_t p = 0; p < L; ++p)
        for (int l = 0; l < V; ++l) buf.acc[p * V + l] = buf.u[p * V + l] * dsum[l];
      for (int64_t k = 0; k < pb.n_dir; ++k) {
        stage_lanes(buf.delta.data(), pb.delta, b, k, c0, nl, L);
        stage_states(buf.Bs.data(), pb.B, b, k, g, d_state, L);
        stage_states(buf.Cs.data(), pb.C, b, k, g, d_state, L);
        const LaneParams<acc_t, kDState> lp(pb, k, c0, nl, d_state);
        prepare_direction<false>(buf.delta.data(), static_cast<acc_t*>(nullptr), buf.a1.data(),
                                 lp, pb.softplus, L);
        const int32_t* pos = pb.pos != nullptr ? pb.pos + k * L : nullptr;
        acc_t h[LaneParams<acc_t, kDState>::kStates][V] = {};
        for (int64_t t = 0; t < L; ++t) {
          const int64_t p = pos != nullptr ? pos[t] : t;
          if (pos != nullptr && t + kAhead < L)
            prefetch_rows<acc_t>(pos[t + kAhead], d_state, buf,
                                 {buf.delta.data(), buf.u.data(), buf.acc.data(),
                                  kDState == 1 ? buf.a1.data() : buf.delta.data()});
          acc_t yv[V] = {};
          lane_step(h, &buf.delta[p * V], &buf.u[p * V], &buf.Bs[p * d_state], lp, d_state,
                    kDState == 1 ? &buf.a1[p * V] : nullptr, static_cast<acc_t*>(nullptr),
                    static_cast<acc_t*>(nullptr));
          const acc_t* Cp = &buf.Cs[p * d_state];
          for (int64_t n = 0; n < d_state; ++n) {
#pragma omp simd
            for (int l = 0; l < V; ++l) yv[l] += Cp[n] * h[n][l];
          }
#pragma omp simd
          for (int l = 0; l < V; ++l) buf.acc[p * V + l] += yv[l];
        }
      }
      unstage_lanes(buf.acc.data(), y, b, 0, c0, nl, L);
    }
  });
}

// ---------------------------------------------------------------------------- backward

template <typename acc_t, int kDState>
void backward_impl(const ScanProblem& pb, const LaneTensor& dyT, const ScanGrads& gr) {
  constexpr int kStates = LaneParams<acc_t, kDState>::kStates;
  const int64_t L = pb.L, d_state = kDState ? kDState : pb.d_state, n_dir = pb.n_dir,
                rows = pb.n_dir * pb.channels;
  const int64_t channels_per_group = pb.channels / pb.groups;
  Split split;
  split.lane_groups = (channels_per_group + V - 1) / V;
  // Enough blocks per (b, g) to feed every thread; each block owns a dB / dC partial.
  const int64_t bg = pb.batch * pb.groups;
  split.blocks = std::clamp<int64_t>((at::get_num_threads() + bg - 1) / bg, 1, split.lane_groups);
  const int64_t items = split.items(pb);
  // Chunk length: its states (and, for d_state > 1, exp(dt A)) fit the budget.
  const int64_t T =
      std::clamp<int64_t>(kChunkBudget / (V * (d_state == 1 ? 1 : 2 * d_state)), 1, L);
  const int64_t chunks = (L + T - 1) / T;

  std::vector<acc_t> dBp(items * n_dir * L * d_state, acc_t(0)),
      dCp(items * n_dir * L * d_state, acc_t(0));
  std::vector<acc_t> dAp(pb.batch * rows * d_state), dDp(pb.batch * rows), dbp(pb.batch * rows);

  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    Buffers<acc_t> buf(L, d_state, true, T, chunks);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / (pb.groups * split.blocks);
      const int64_t g = (item / split.blocks) % pb.groups;
      const int64_t j = item % split.blocks;
      acc_t* dBi = &dBp[item * n_dir * L * d_state];
      acc_t* dCi = &dCp[item * n_dir * L * d_state];
      const int64_t lg_begin = j * split.lane_groups / split.blocks;
      const int64_t lg_end = (j + 1) * split.lane_groups / split.blocks;
      for (int64_t lg = lg_begin; lg < lg_end; ++lg) {
        const int64_t c0 = g * channels_per_group + lg * V;
        const int nl = static_cast<int>(std::min<int64_t>(V, channels_per_group - lg * V));
        stage_lanes(buf.u.data(), pb.u, b, 0, c0, nl, L);
        stage_lanes(buf.dy.data(), dyT, b, 0, c0, nl, L);
        acc_t dsum[V], dD[V] = {};
        d_sum(pb, c0, nl, dsum);
        for (int64_t p = 0; p < L; ++p)
          for (int l = 0; l < V; ++l) {
            buf.acc[p * V + l] = buf.dy[p * V + l] * dsum[l];
            dD[l] += buf.dy[p * V + l] * buf.u[p * V + l];
          }
        for (int64_t k = 0; k < n_dir; ++k) {
          stage_lanes(buf.delta.data(), pb.delta, b, k, c0, nl, L);
          stage_states(buf.Bs.data(), pb.B, b, k, g, d_state, L);
          stage_states(buf.Cs.data(), pb.C, b, k, g, d_state, L);
          const LaneParams<acc_t, kDState> lp(pb, k, c0, nl, d_state);
          prepare_direction<true>(buf.delta.data(), buf.sig.data(), buf.a1.data(), lp, pb.softplus,
                                  L);
          const int32_t* pos = pb.pos != nullptr ? pb.pos + k * L : nullptr;
          auto position = [&](int64_t t) -> int64_t { return pos != nullptr ? pos[t] : t; };
          auto a1_at = [&](int64_t p) { return kDState == 1 ? &buf.a1[p * V] : nullptr; };
          acc_t h[kStates][V] = {};
          // States at chunk starts (the start of chunk 0 is the zero state).
          std::fill(buf.hck.begin(), buf.hck.begin() + d_state * V, acc_t(0));
          for (int64_t t = 0; chunks > 1 && t < (chunks - 1) * T; ++t) {
            const int64_t p = position(t);
            lane_step(h, &buf.delta[p * V], &buf.u[p * V], &buf.Bs[p * d_state], lp, d_state,
                      a1_at(p), static_cast<acc_t*>(nullptr),
                      (t + 1) % T == 0 ? &buf.hck[(t + 1) / T * d_state * V] : nullptr);
          }
          acc_t ga[kStates][V] =
              {};  // a_{t+1} * dh_{t+1}: the part of dh_t that flows back in time
          acc_t dA[kStates][V] = {}, dbias[V] = {};
          for (int64_t ci = chunks - 1; ci >= 0; --ci) {
            const int64_t t0 = ci * T, t1 = std::min(L, t0 + T);
            const acc_t* h0 = &buf.hck[ci * d_state * V];
            for (int64_t n = 0; n < d_state; ++n) std::copy(h0 + n * V, h0 + n * V + V, h[n]);
            for (int64_t t = t0; t < t1; ++t) {
              const int64_t p = position(t), i = t - t0;
              if (pos != nullptr && t + kAhead < t1)
                prefetch_rows<acc_t>(pos[t + kAhead], d_state, buf,
                                     {buf.delta.data(), buf.u.data(),
                                      kDState == 1 ? buf.a1.data() : buf.u.data()});
              lane_step(h, &buf.delta[p * V], &buf.u[p * V], &buf.Bs[p * d_state], lp, d_state,
                        a1_at(p), kDState == 1 ? nullptr : &buf.ac[i * d_state * V],
                        &buf.hc[i * d_state * V]);
            }
            for (int64_t t = t1 - 1; t >= t0; --t) {
              const int64_t p = position(t), i = t - t0;
              if (pos != nullptr && t - kAhead >= t0)
                prefetch_rows<acc_t>(pos[t - kAhead], d_state, buf,
                                     {buf.delta.data(), buf.u.data(), buf.dy.data(),
                                      buf.sig.data(), buf.acc.data(), buf.dd.data(),
                                      kDState == 1 ? buf.a1.data() : buf.u.data()});
              const acc_t* hprev = i > 0 ? &buf.hc[(i - 1) * d_state * V] : h0;
              const acc_t* hcur = &buf.hc[i * d_state * V];
              const acc_t* a = kDState == 1 ? a1_at(p) : &buf.ac[i * d_state * V];
              const acc_t* dt = &buf.delta[p * V];
              const acc_t* dy = &buf.dy[p * V];
              const acc_t* u = &buf.u[p * V];
              const acc_t* Bp = &buf.Bs[p * d_state];
              const acc_t* Cp = &buf.Cs[p * d_state];
              acc_t dBu[V] = {}, ddt[V] = {};
              if constexpr (kDState == 1) {
                const acc_t bn = Bp[0], cn = Cp[0], *An = lp.A[0];
                acc_t sum_dB = 0, sum_dC = 0;
#pragma omp simd reduction(+ : sum_dB, sum_dC)
                for (int l = 0; l < V; ++l) {
                  const acc_t dh = ga[0][l] + cn * dy[l];
                  const acc_t ah = a[l] * hprev[l];
                  sum_dC += dy[l] * hcur[l];
                  sum_dB += dh * dt[l] * u[l];
                  dBu[l] += dh * bn;
                  ddt[l] += dh * (An[l] * ah + bn * u[l]);
                  dA[0][l] += dh * dt[l] * ah;
                  ga[0][l] = a[l] * dh;
                }
                dBi[k * L + p] += sum_dB;
                dCi[k * L + p] += sum_dC;
              }
              for (int64_t n = 0; kDState != 1 && n < d_state; ++n) {
                const acc_t bn = Bp[n], cn = Cp[n], *An = lp.A[n];
                acc_t sum_dB = 0, sum_dC = 0;
#pragma omp simd reduction(+ : sum_dB, sum_dC)
                for (int l = 0; l < V; ++l) {
                  const acc_t dh = ga[n][l] + cn * dy[l];
                  const acc_t ah = a[n * V + l] * hprev[n * V + l];
                  sum_dC += dy[l] * hcur[n * V + l];
                  sum_dB += dh * dt[l] * u[l];
                  dBu[l] += dh * bn;
                  ddt[l] += dh * (An[l] * ah + bn * u[l]);
                  dA[n][l] += dh * dt[l] * ah;
                  ga[n][l] = a[n * V + l] * dh;
                }
                dBi[(k * L + p) * d_state + n] += sum_dB;
                dCi[(k * L + p) * d_state + n] += sum_dC;
              }
              const acc_t* sig = &buf.sig[p * V];
#pragma omp simd
              for (int l = 0; l < V; ++l) {
                buf.acc[p * V + l] += dt[l] * dBu[l];
                const acc_t dd = ddt[l] * sig[l];
                buf.dd[p * V + l] = dd;
                dbias[l] += dd;
              }
            }
          }
          unstage_lanes(buf.dd.data(), gr.ddelta, b, k, c0, nl, L);
          for (int l = 0; l < nl; ++l) {
            const int64_t row = b * rows + k * pb.channels + c0 + l;
            for (int64_t n = 0; n < d_state; ++n) dAp[row * d_state + n] = dA[n][l];
            dbp[row] = dbias[l];
            dDp[row] = dD[l];
          }
        }
        unstage_lanes(buf.acc.data(), gr.du, b, 0, c0, nl, L);
      }
    }
  });

  // dB / dC: sum the blocks' partials in block order.
  const int64_t blocks = split.blocks;
  at::parallel_for(0, pb.batch * n_dir * pb.groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / (n_dir * pb.groups), k = (idx / pb.groups) % n_dir,
                    g = idx % pb.groups;
      for (const auto& [part, out] : {std::pair{&dBp, &gr.dB}, std::pair{&dCp, &gr.dC}}) {
        with_storage_type(out->dtype, [&](auto tag) {
          using dst_t = decltype(tag);
          dst_t* dst = static_cast<dst_t*>(out->data) + b * out->sb + k * out->sk + g * out->sg;
          const acc_t* first =
              part->data() + ((b * pb.groups + g) * blocks * n_dir + k) * L * d_state;
          for (int64_t p = 0; p < L; ++p)
            for (int64_t n = 0; n < d_state; ++n) {
              acc_t s = 0;
              for (int64_t j = 0; j < blocks; ++j)
                s += first[j * n_dir * L * d_state + p * d_state + n];
              dst[n * out->sn + p * out->sp] = static_cast<dst_t>(s);
            }
        });
      }
    }
  });
  // dA, dD, ddelta_bias: sum over the batch.
  acc_t* dA = static_cast<acc_t*>(gr.dA);
  acc_t* dD = static_cast<acc_t*>(gr.dD);
  acc_t* dbias = static_cast<acc_t*>(gr.dbias);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t n = 0; n < d_state; ++n) {
      acc_t s = 0;
      for (int64_t b = 0; b < pb.batch; ++b) s += dAp[(b * rows + r) * d_state + n];
      dA[r * d_state + n] = s;
    }
    acc_t sD = 0, sb = 0;
    for (int64_t b = 0; b < pb.batch; ++b) {
      sD += dDp[b * rows + r];
      sb += dbp[b * rows + r];
    }
    dD[r] = sD;
    dbias[r] = sb;
  }
}

template <typename F>
void dispatch(const ScanProblem& pb, F&& f) {
  if (pb.compute == at::kFloat) {
    pb.d_state == 1 ? f(float{}, std::integral_constant<int, 1>{})
              : f(float{}, std::integral_constant<int, 0>{});
  } else {
    pb.d_state == 1 ? f(double{}, std::integral_constant<int, 1>{})
              : f(double{}, std::integral_constant<int, 0>{});
  }
}

void forward(const ScanProblem& pb, const LaneTensor& y) {
  dispatch(pb, [&](auto acc, auto n) { forward_impl<decltype(acc), decltype(n)::value>(pb, y); });
}

void backward(const ScanProblem& pb, const LaneTensor& dy, const ScanGrads& grads) {
  dispatch(pb, [&](auto acc, auto n) {
    backward_impl<decltype(acc), decltype(n)::value>(pb, dy, grads);
  });
}
