// The emulator behind cuda_emu.h: coroutine CUDA threads, the block scheduler, the sanitizers,
// the launch-legality checks and the memory-traffic model. Compiled WITHOUT -fsanitize=thread;
// the kernel objects are compiled with it and call the __tsan_* hooks defined here.
//
// Scheduling: the threads of a block run one at a time, each until it reaches __syncthreads(), a
// warp collective, or its end; a pass resumes every thread that can go on. A barrier releases
// when every thread of the block has arrived at the same call site; a collective when every lane
// of its mask has (the values are exchanged through a per-warp slot array, double-buffered by
// generation so a fast lane cannot overwrite a value a slow one has yet to read).
//
// Shared memory: per byte, the thread and barrier epoch of the last write and of the last read
// (or "several readers"). A read or write of a byte that another thread wrote since the last
// barrier, or a write of a byte another thread read since then, is a race; a read of a byte never
// written in the block is an uninitialised read.
//
// Traffic: a global access is one lane's part of a warp instruction. The k-th execution of a
// static site (the return address of the hook, i.e. the instruction) by every lane of a warp is
// one request; its distinct 32-byte sectors and 128-byte lines, counted relative to the start
// of the allocation (GPU allocations are 256-byte aligned), are what the request moves.
#include <dlfcn.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <exception>
#include <map>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda_emu.h"
#include "fiber.h"

namespace cuda_emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kMaxThreads = 1024;

// ------------------------------------------------------------------------------- bookkeeping

[[noreturn]] void fail(const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  throw std::runtime_error(buf);
}

struct Alloc {
  uintptr_t lo, hi;
  std::string name;
  bool writable;
  bool param;  // a launch's parameter block: readable, not device memory traffic
};

struct SharedVar {
  uintptr_t lo, hi;
  std::string name;
};

struct KernelInfo {
  std::string name;
  size_t static_smem = 0;
  std::vector<SharedVar> vars;
  int max_dynamic_smem = -1;  // cudaFuncAttributeMaxDynamicSharedMemorySize; -1: default
};

struct Shadow {
  uint32_t w_epoch = 0, r_epoch = 0;
  int16_t writer = -1, reader = -1;  // reader -2: several threads
  bool init = false;
};

struct SharedRegion {
  uintptr_t lo, hi;
  std::string name;
  std::vector<Shadow> shadow;
};

enum class State { kRun, kBarrier, kWarp, kDone };

struct Thread {
  void* sp = nullptr;
  char* stack = nullptr;
  int tid = 0;
  uint3 idx{};
  State state = State::kRun;
  uint64_t wait_gen = 0;
  std::unordered_map<uint32_t, uint32_t> occurrence;  // site -> executions so far
};

struct Request {
  uint8_t kind;  // 0 load, 1 store, 2 atomic
  std::vector<uint64_t> sectors;
};

struct Warp {
  uint64_t gen = 0;
  int count = 0;
  unsigned mask = 0, live = 0;
  int kind = 0;
  const char* file = nullptr;
  int line = 0;
  uint64_t slots[2][32]{};
  std::unordered_map<uint64_t, Request> requests;  // (site, occurrence) -> lanes' sectors
};

struct LaunchStats {
  std::string kernel, file;
  int line;
  dim3 grid, block;
  size_t smem_static, smem_dynamic;
  uint64_t requests[3] = {0, 0, 0}, sectors[3] = {0, 0, 0}, lines[3] = {0, 0, 0};
  uint64_t atomics = 0, accesses = 0;
};

struct Emulator {
  int arch = 90;
  bool execute = true;  // false: check and record launches without running them
  bool reverse_blocks = false;  // run a grid's blocks last to first (order-independence tests)
  std::vector<Alloc> allocs;  // sorted by lo
  std::unordered_map<uintptr_t, KernelInfo> kernels;
  std::vector<LaunchStats> launches;
  cudaError_t last_error = cudaSuccess;
  std::string last_message;
  std::vector<char*> stacks;

  // The running launch.
  bool running = false;
  const KernelInfo* kernel = nullptr;
  std::string kernel_name;
  LaunchStats* stats = nullptr;
  dim3 grid, block;
  uint3 block_idx{};
  int n_threads = 0;
  std::vector<Thread> threads;
  std::vector<Warp> warps;
  std::vector<SharedRegion> shared;  // [0]: dynamic (with guard bands), then the static vars
  size_t dynamic_bytes = 0;
  static constexpr size_t kGuard = 4096;
  std::vector<char> dynamic_buf;
  uint32_t epoch = 1;
  uint64_t bar_gen = 0;
  int bar_count = 0, exited = 0;
  const char* bar_file = nullptr;
  int bar_line = 0;
  Thread* cur = nullptr;
  void* main_sp = nullptr;
  std::exception_ptr error;
  uintptr_t module_base = 0;
  struct PendingRead {
    SharedRegion* region;
    uintptr_t addr;
    int tid;
    uint3 idx;
    const void* pc;
  };
  std::vector<PendingRead> pending;  // reads of unwritten shared bytes in this epoch
};

Emulator& emu() {
  static Emulator e;
  return e;
}

uintptr_t module_base() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&module_base), &info) == 0) return 0;
  return reinterpret_cast<uintptr_t>(info.dli_fbase);
}

// "@pc:OFFSET": the Python driver replaces it by the source line (addr2line on this library).
std::string site(const void* pc) {
  char buf[64];
  snprintf(buf, sizeof buf, "@pc:0x%lx",
           static_cast<unsigned long>(reinterpret_cast<uintptr_t>(pc) - emu().module_base - 1));
  return buf;
}

std::string where() {
  Emulator& e = emu();
  char buf[256];
  snprintf(buf, sizeof buf, "%s, block (%u,%u,%u) thread (%u,%u,%u)", e.kernel_name.c_str(),
           e.block_idx.x, e.block_idx.y, e.block_idx.z, e.cur ? e.cur->idx.x : 0,
           e.cur ? e.cur->idx.y : 0, e.cur ? e.cur->idx.z : 0);
  return buf;
}

const Alloc* find_alloc(uintptr_t a) {
  const auto& v = emu().allocs;
  auto it = std::upper_bound(v.begin(), v.end(), a,
                             [](uintptr_t x, const Alloc& al) { return x < al.lo; });
  if (it == v.begin()) return nullptr;
  --it;
  return a < it->hi ? &*it : nullptr;
}

std::string nearest_alloc(uintptr_t a) {
  const auto& v = emu().allocs;
  std::string best;
  uintptr_t dist = ~uintptr_t(0);
  char buf[256];
  for (const Alloc& al : v) {
    if (al.param) continue;
    if (a >= al.hi && a - al.hi < dist) {
      dist = a - al.hi;
      snprintf(buf, sizeof buf, "%lu bytes past the end of '%s' (%lu bytes)",
               static_cast<unsigned long>(a - al.hi), al.name.c_str(),
               static_cast<unsigned long>(al.hi - al.lo));
      best = buf;
    } else if (a < al.lo && al.lo - a < dist) {
      dist = al.lo - a;
      snprintf(buf, sizeof buf, "%lu bytes before '%s'", static_cast<unsigned long>(al.lo - a),
               al.name.c_str());
      best = buf;
    }
  }
  return best.empty() ? "no allocation registered" : best;
}

// ------------------------------------------------------------------------------ the scheduler

std::string site(const void* pc);

// At a barrier or the end of the block: reads of shared bytes that no thread wrote.
void check_pending_reads() {
  Emulator& e = emu();
  for (const Emulator::PendingRead& r : e.pending) {
    if (!r.region->shadow[r.addr - r.region->lo].init) {
      fail("%s, block (%u,%u,%u) thread (%u,%u,%u): read of uninitialised shared memory %s+%lu "
           "at %s",
           e.kernel_name.c_str(), e.block_idx.x, e.block_idx.y, e.block_idx.z, r.idx.x, r.idx.y,
           r.idx.z, r.region->name.c_str(), static_cast<unsigned long>(r.addr - r.region->lo),
           site(r.pc).c_str());
    }
  }
  e.pending.clear();
}

void yield() {
  Emulator& e = emu();
  Thread* t = e.cur;
  cuda_emu_switch(&t->sp, e.main_sp);
}

struct FiberStart {
  void (*thunk)(void*);
  void* ctx;
};
FiberStart g_start;

void on_exit_thread() {
  Emulator& e = emu();
  if (e.bar_count > 0) {
    fail("%s: barrier divergence: the thread exits while %d thread(s) wait at __syncthreads() "
         "at %s:%d",
         where().c_str(), e.bar_count, e.bar_file, e.bar_line);
  }
  ++e.exited;
  Warp& w = e.warps[e.cur->tid / 32];
  w.live &= ~(1u << (e.cur->tid % 32));
  if (w.count > 0 && (w.mask >> (e.cur->tid % 32) & 1u)) {
    fail("%s: the thread exits while its warp waits for it in a collective at %s:%d",
         where().c_str(), w.file, w.line);
  }
}

extern "C" void cuda_emu_fiber_main(void* arg) {
  Emulator& e = emu();
  Thread* t = static_cast<Thread*>(arg);
  try {
    g_start.thunk(g_start.ctx);
    on_exit_thread();
  } catch (...) {
    e.error = std::current_exception();
  }
  t->state = State::kDone;
  cuda_emu_switch(&t->sp, e.main_sp);
  __builtin_trap();  // a finished thread is never resumed
}

void start_fiber(Thread& t) {
  t.sp = fiber_stack_pointer(t.stack, kStackBytes, &cuda_emu_fiber_main, &t);
  t.state = State::kRun;
  t.occurrence.clear();
}

char* stack_for(int i) {
  Emulator& e = emu();
  while (static_cast<int>(e.stacks.size()) <= i) {
    e.stacks.push_back(fiber_stack(kStackBytes));
  }
  return e.stacks[i];
}

bool ready(const Thread& t) {
  Emulator& e = emu();
  switch (t.state) {
    case State::kRun:
      return true;
    case State::kBarrier:
      return e.bar_gen != t.wait_gen;
    case State::kWarp:
      return e.warps[t.tid / 32].gen != t.wait_gen;
    case State::kDone:
      return false;
  }
  return false;
}

void flush_requests() {
  Emulator& e = emu();
  for (Warp& w : e.warps) {
    for (auto& kv : w.requests) {
      Request& r = kv.second;
      std::sort(r.sectors.begin(), r.sectors.end());
      r.sectors.erase(std::unique(r.sectors.begin(), r.sectors.end()), r.sectors.end());
      uint64_t lines = 0, last = ~uint64_t(0);
      for (uint64_t s : r.sectors) {
        if ((s >> 2) != last) ++lines;
        last = s >> 2;
      }
      e.stats->requests[r.kind] += 1;
      e.stats->sectors[r.kind] += r.sectors.size();
      e.stats->lines[r.kind] += lines;
    }
    w.requests.clear();
  }
}

std::string describe_waits() {
  Emulator& e = emu();
  int bar = 0, warp = 0, done = 0;
  std::string warp_site;
  for (const Thread& t : e.threads) {
    if (t.state == State::kBarrier) ++bar;
    if (t.state == State::kDone) ++done;
    if (t.state == State::kWarp) {
      ++warp;
      const Warp& w = e.warps[t.tid / 32];
      warp_site = std::string(w.file ? w.file : "?") + ":" + std::to_string(w.line);
    }
  }
  char buf[512];
  snprintf(buf, sizeof buf,
           "%d thread(s) at __syncthreads() (%s:%d), %d in a warp collective (%s), %d exited", bar,
           e.bar_file ? e.bar_file : "-", e.bar_line, warp, warp_site.c_str(), done);
  return buf;
}

void run_block() {
  Emulator& e = emu();
  for (Thread& t : e.threads) start_fiber(t);
  for (Warp& w : e.warps) {
    w.gen = 0;
    w.count = 0;
    w.requests.clear();
  }
  for (size_t i = 0; i < e.warps.size(); ++i) {
    const int n = std::min(32, e.n_threads - static_cast<int>(i) * 32);
    e.warps[i].live = n == 32 ? ~0u : ((1u << n) - 1);
  }
  for (SharedRegion& r : e.shared) std::fill(r.shadow.begin(), r.shadow.end(), Shadow{});
  e.bar_count = 0;
  e.exited = 0;
  e.bar_file = nullptr;
  e.pending.clear();
  ++e.epoch;
  int live = e.n_threads;
  while (live > 0) {
    bool progress = false;
    for (Thread& t : e.threads) {
      if (!ready(t)) continue;
      t.state = State::kRun;
      e.cur = &t;
      cuda_emu_switch(&e.main_sp, t.sp);
      e.cur = nullptr;
      progress = true;
      if (e.error) {
        std::exception_ptr err = e.error;
        e.error = nullptr;
        std::rethrow_exception(err);
      }
      if (t.state == State::kDone) --live;
    }
    if (!progress && live > 0) {
      fail("%s, block (%u,%u,%u): deadlock (barrier or collective divergence): %s",
           e.kernel_name.c_str(), e.block_idx.x, e.block_idx.y, e.block_idx.z,
           describe_waits().c_str());
    }
  }
  check_pending_reads();
  flush_requests();
}

// ------------------------------------------------------------------------- memory accesses

enum Access { kLoad = 0, kStore = 1, kAtomic = 2 };

SharedRegion* find_shared(uintptr_t a) {
  Emulator& e = emu();
  for (SharedRegion& r : e.shared) {
    if (a >= r.lo && a < r.hi) return &r;
  }
  return nullptr;
}

void shared_access(SharedRegion& r, uintptr_t a, size_t size, bool write, const void* pc) {
  Emulator& e = emu();
  const int16_t me = static_cast<int16_t>(e.cur->tid);
  if (&r == &e.shared[0]) {  // dynamic shared memory lies between two guard bands
    const uintptr_t lo = r.lo + Emulator::kGuard, hi = lo + e.dynamic_bytes;
    if (a < lo || a + size > hi) {
      fail("%s: out-of-bounds %s of dynamic shared memory at byte %ld of %zu, at %s",
           where().c_str(), write ? "write" : "read", static_cast<long>(a - lo), e.dynamic_bytes,
           site(pc).c_str());
    }
  } else if (a + size > r.hi) {
    fail("%s: out-of-bounds %s of __shared__ '%s' at %s", where().c_str(),
         write ? "write" : "read", r.name.c_str(), site(pc).c_str());
  }
  for (size_t i = 0; i < size; ++i) {
    Shadow& s = r.shadow[a + i - r.lo];
    if (write) {
      if (s.w_epoch == e.epoch && s.writer != me) {
        fail("%s: shared-memory race: write of %s+%lu, which thread %d wrote since the last "
             "barrier, at %s",
             where().c_str(), r.name.c_str(), static_cast<unsigned long>(a + i - r.lo), s.writer,
             site(pc).c_str());
      }
      if (s.r_epoch == e.epoch && s.reader != me) {
        fail("%s: shared-memory race: write of %s+%lu, which %s read since the last barrier, "
             "at %s",
             where().c_str(), r.name.c_str(), static_cast<unsigned long>(a + i - r.lo),
             s.reader == -2 ? "other threads" : ("thread " + std::to_string(s.reader)).c_str(),
             site(pc).c_str());
      }
      s.w_epoch = e.epoch;
      s.writer = me;
      s.init = true;
    } else {
      if (!s.init) {
        // Decided at the next barrier: a write by another thread before it makes this a race
        // (reported by that write), no write at all an uninitialised read.
        e.pending.push_back({&r, a + i, e.cur->tid, e.cur->idx, pc});
      }
      if (s.w_epoch == e.epoch && s.writer != me) {
        fail("%s: shared-memory race: read of %s+%lu, which thread %d wrote since the last "
             "barrier, at %s",
             where().c_str(), r.name.c_str(), static_cast<unsigned long>(a + i - r.lo), s.writer,
             site(pc).c_str());
      }
      if (s.r_epoch != e.epoch) {
        s.r_epoch = e.epoch;
        s.reader = me;
      } else if (s.reader != me) {
        s.reader = -2;
      }
    }
  }
}

void global_access(uintptr_t a, size_t size, Access kind, const void* pc) {
  Emulator& e = emu();
  const Alloc* al = find_alloc(a);
  if (al == nullptr || a + size > al->hi) {
    fail("%s: out-of-bounds global %s of %zu bytes at 0x%lx (%s), at %s", where().c_str(),
         kind == kLoad ? "read" : kind == kStore ? "write" : "atomic", size,
         static_cast<unsigned long>(a), nearest_alloc(a).c_str(), site(pc).c_str());
  }
  if (al->param) {
    if (kind != kLoad) fail("%s: write to kernel parameters at %s", where().c_str(), site(pc).c_str());
    return;
  }
  if (kind != kLoad && !al->writable) {
    fail("%s: %s to read-only input '%s' at %s", where().c_str(),
         kind == kStore ? "store" : "atomic", al->name.c_str(), site(pc).c_str());
  }
  Thread& t = *e.cur;
  const uint32_t pc_off = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(pc) - e.module_base);
  const uint32_t occ = t.occurrence[pc_off]++;
  Request& r = e.warps[t.tid / 32].requests[(static_cast<uint64_t>(pc_off) << 32) | occ];
  r.kind = static_cast<uint8_t>(kind);
  const uint64_t alloc_id = static_cast<uint64_t>(al - e.allocs.data()) << 40;
  const uintptr_t off = a - al->lo;
  for (uintptr_t s = off >> 5; s <= (off + size - 1) >> 5; ++s) r.sectors.push_back(alloc_id | s);
  ++e.stats->accesses;
}

inline void access(void* addr, size_t size, bool write, const void* pc) {
  Emulator& e = emu();
  if (e.cur == nullptr) return;  // host code of the kernel objects
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  const uintptr_t stack = reinterpret_cast<uintptr_t>(e.cur->stack);
  if (a >= stack && a < stack + kStackBytes) return;  // the thread's registers and locals
  if (SharedRegion* r = find_shared(a)) {
    shared_access(*r, a, size, write, pc);
    return;
  }
  global_access(a, size, write ? kStore : kLoad, pc);
}

}  // namespace

// ----------------------------------------------------------------------- device-side API

uint3 thread_idx() { return emu().cur->idx; }
uint3 block_idx() { return emu().block_idx; }
dim3 block_dim() { return emu().block; }
dim3 grid_dim() { return emu().grid; }

void* dynamic_shared() {
  Emulator& e = emu();
  return e.dynamic_buf.data() + Emulator::kGuard;
}

void syncthreads(const char* file, int line) {
  Emulator& e = emu();
  if (e.exited > 0) {
    fail("%s: barrier divergence: __syncthreads() at %s:%d after %d thread(s) of the block "
         "exited",
         where().c_str(), file, line, e.exited);
  }
  if (e.bar_count == 0) {
    e.bar_file = file;
    e.bar_line = line;
  } else if (e.bar_line != line || std::strcmp(e.bar_file, file) != 0) {
    fail("%s: barrier divergence: __syncthreads() at %s:%d while %d thread(s) wait at %s:%d",
         where().c_str(), file, line, e.bar_count, e.bar_file, e.bar_line);
  }
  Thread& t = *e.cur;
  t.wait_gen = e.bar_gen;
  if (++e.bar_count == e.n_threads) {
    check_pending_reads();
    e.bar_count = 0;
    ++e.bar_gen;
    ++e.epoch;
    return;
  }
  t.state = State::kBarrier;
  yield();
}

uint64_t warp_collective(int kind, unsigned mask, uint64_t bits, int arg, int width,
                         const char* file, int line) {
  Emulator& e = emu();
  Thread& t = *e.cur;
  Warp& w = e.warps[t.tid / 32];
  const int lane = t.tid % 32;
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    fail("%s: warp shuffle width %d at %s:%d is not a power of two <= 32", where().c_str(), width,
         file, line);
  }
  if (!(mask >> lane & 1u)) {
    fail("%s: lane %d calls a warp collective at %s:%d with mask 0x%08x that excludes it",
         where().c_str(), lane, file, line, mask);
  }
  if (mask & ~w.live) {
    fail("%s: warp collective at %s:%d names lanes 0x%08x that do not exist or have exited",
         where().c_str(), file, line, mask & ~w.live);
  }
  if (w.count == 0) {
    w.mask = mask;
    w.kind = kind;
    w.file = file;
    w.line = line;
  } else if (w.mask != mask || w.kind != kind || w.line != line || std::strcmp(w.file, file)) {
    fail("%s: warp divergence: collective at %s:%d (mask 0x%08x) while lanes wait at %s:%d "
         "(mask 0x%08x)",
         where().c_str(), file, line, mask, w.file, w.line, w.mask);
  }
  const uint64_t gen = w.gen;
  uint64_t* slot = w.slots[gen & 1];
  slot[lane] = bits;
  t.wait_gen = gen;
  if (++w.count == __builtin_popcount(mask)) {
    w.count = 0;
    ++w.gen;
  } else {
    t.state = State::kWarp;
    yield();
  }
  const int seg = lane & ~(width - 1);
  int src = lane;
  switch (kind) {
    case 0:
      src = seg + (arg & (width - 1));
      break;
    case 1:
      src = lane - arg >= seg ? lane - arg : lane;
      break;
    case 2:
      src = lane + arg < seg + width ? lane + arg : lane;
      break;
    case 3:
      src = (lane ^ arg) < seg + width ? (lane ^ arg) : lane;
      break;
    default: {
      unsigned ballot = 0;
      for (int l = 0; l < 32; ++l) {
        if ((mask >> l & 1u) && slot[l] != 0) ballot |= 1u << l;
      }
      if (kind == 4) return ballot;
      if (kind == 5) return ballot != 0;
      return ballot == mask;
    }
  }
  if (!(mask >> src & 1u)) {
    fail("%s: shuffle at %s:%d reads lane %d, which is not in mask 0x%08x", where().c_str(), file,
         line, src, mask);
  }
  return slot[src];
}

namespace {
template <typename T>
T atomic_add_impl(T* address, T v, const void* pc) {
  Emulator& e = emu();
  const uintptr_t a = reinterpret_cast<uintptr_t>(address);
  if (e.cur == nullptr) fail("atomicAdd outside a kernel");
  if (a % sizeof(T) != 0) fail("%s: misaligned atomicAdd at %s", where().c_str(), site(pc).c_str());
  if (SharedRegion* r = find_shared(a)) {
    // Shared atomics are ordered among themselves: only check bounds and initialisation.
    shared_access(*r, a, sizeof(T), false, pc);
    for (size_t i = 0; i < sizeof(T); ++i) r->shadow[a + i - r->lo].r_epoch = 0;
  } else {
    global_access(a, sizeof(T), kAtomic, pc);
    ++e.stats->atomics;
  }
  const T old = *address;
  *address = old + v;
  return old;
}
}  // namespace

float atomic_add(float* a, float v) { return atomic_add_impl(a, v, __builtin_return_address(0)); }
double atomic_add(double* a, double v) {
  return atomic_add_impl(a, v, __builtin_return_address(0));
}
int atomic_add(int* a, int v) { return atomic_add_impl(a, v, __builtin_return_address(0)); }
unsigned atomic_add(unsigned* a, unsigned v) {
  return atomic_add_impl(a, v, __builtin_return_address(0));
}
unsigned long long atomic_add(unsigned long long* a, unsigned long long v) {
  return atomic_add_impl(a, v, __builtin_return_address(0));
}
// sm_90's vector atomicAdd: one 16-byte atomic access, four independent float adds.
float4 atomic_add(float4* address, float4 v) {
  Emulator& e = emu();
  const void* pc = __builtin_return_address(0);
  const uintptr_t a = reinterpret_cast<uintptr_t>(address);
  if (e.cur == nullptr) fail("atomicAdd outside a kernel");
  if (a % 16 != 0) fail("%s: misaligned float4 atomicAdd at %s", where().c_str(), site(pc).c_str());
  if (find_shared(a) != nullptr) {
    fail("%s: float4 atomicAdd on shared memory (global only) at %s", where().c_str(),
         site(pc).c_str());
  }
  global_access(a, 16, kAtomic, pc);
  ++e.stats->atomics;
  const float4 old = *address;
  *address = float4{old.x + v.x, old.y + v.y, old.z + v.z, old.w + v.w};
  return old;
}

// ------------------------------------------------------------------------ host-side API

void* param_alloc(size_t bytes) {
  Emulator& e = emu();
  void* p = ::operator new(bytes + 64);
  const uintptr_t lo = reinterpret_cast<uintptr_t>(p);
  Alloc al{lo, lo + bytes + 64, "kernel parameters", false, true};
  auto it = std::upper_bound(e.allocs.begin(), e.allocs.end(), lo,
                             [](uintptr_t x, const Alloc& a) { return x < a.lo; });
  e.allocs.insert(it, al);
  return p;
}

void param_free(void* p) {
  Emulator& e = emu();
  const uintptr_t lo = reinterpret_cast<uintptr_t>(p);
  e.allocs.erase(std::remove_if(e.allocs.begin(), e.allocs.end(),
                                [&](const Alloc& a) { return a.param && a.lo == lo; }),
                 e.allocs.end());
  ::operator delete(p);
}

namespace {
const KernelInfo& kernel_info(const void* kernel) {
  Emulator& e = emu();
  auto it = e.kernels.find(reinterpret_cast<uintptr_t>(kernel));
  if (it == e.kernels.end()) {
    KernelInfo info;
    char buf[64];
    snprintf(buf, sizeof buf, "kernel@0x%lx",
             static_cast<unsigned long>(reinterpret_cast<uintptr_t>(kernel) - e.module_base));
    info.name = buf;
    it = e.kernels.emplace(reinterpret_cast<uintptr_t>(kernel), info).first;
  }
  return it->second;
}

size_t smem_optin_limit(int arch) { return arch >= 90 ? 227 * 1024 : arch >= 80 ? 163 * 1024 : 48 * 1024; }

cudaError_t launch_error(cudaError_t code, const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  Emulator& e = emu();
  if (e.last_error == cudaSuccess) {
    e.last_error = code;
    e.last_message = buf;
  }
  return code;
}
}  // namespace

cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  Emulator& e = emu();
  KernelInfo& info = const_cast<KernelInfo&>(kernel_info(kernel));
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) {
    return launch_error(cudaErrorInvalidValue, "cudaFuncSetAttribute(%s): attribute %d is not emulated",
                        info.name.c_str(), static_cast<int>(attr));
  }
  const size_t limit = smem_optin_limit(e.arch);
  if (value < 0 || info.static_smem + static_cast<size_t>(value) > limit) {
    return launch_error(cudaErrorInvalidValue,
                        "cudaFuncSetAttribute(%s, MaxDynamicSharedMemorySize, %d): %zu static + "
                        "%d dynamic bytes exceed the sm_%d limit of %zu",
                        info.name.c_str(), value, info.static_smem, value, e.arch, limit);
  }
  info.max_dynamic_smem = value;
  return cudaSuccess;
}

cudaError_t launch(const void* kernel, dim3 grid, dim3 block, size_t smem, void (*thunk)(void*),
                   void* ctx, const char* file, int line) {
  Emulator& e = emu();
  if (e.module_base == 0) e.module_base = module_base();
  const KernelInfo& info = kernel_info(kernel);
  const char* name = info.name.c_str();
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0) {
    return launch_error(cudaErrorInvalidConfiguration, "launch of %s at %s:%d: empty grid (%u,%u,%u) or block (%u,%u,%u)",
                        name, file, line, grid.x, grid.y, grid.z, block.x, block.y, block.z);
  }
  if (grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u) {
    return launch_error(cudaErrorInvalidConfiguration,
                        "launch of %s at %s:%d: grid (%u,%u,%u) exceeds the limits (2^31-1, "
                        "65535, 65535)",
                        name, file, line, grid.x, grid.y, grid.z);
  }
  if (threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
    return launch_error(cudaErrorInvalidConfiguration,
                        "launch of %s at %s:%d: block (%u,%u,%u) exceeds the limits (1024 "
                        "threads; 1024, 1024, 64)",
                        name, file, line, block.x, block.y, block.z);
  }
  const size_t default_dynamic = 48 * 1024 - std::min<size_t>(info.static_smem, 48 * 1024);
  const size_t max_dynamic =
      info.max_dynamic_smem >= 0 ? static_cast<size_t>(info.max_dynamic_smem) : default_dynamic;
  if (info.static_smem > 48 * 1024 || smem > max_dynamic ||
      info.static_smem + smem > smem_optin_limit(e.arch)) {
    return launch_error(cudaErrorInvalidValue,
                        "launch of %s at %s:%d: %zu static + %zu dynamic bytes of shared memory; "
                        "the kernel allows %zu dynamic bytes (%s; sm_%d limit %zu)",
                        name, file, line, info.static_smem, smem, max_dynamic,
                        info.max_dynamic_smem >= 0 ? "opted in with cudaFuncSetAttribute"
                                                   : "48 KiB default, no opt-in",
                        e.arch, smem_optin_limit(e.arch));
  }
  if (e.running) fail("nested kernel launch of %s", name);

  e.launches.push_back(LaunchStats{});
  LaunchStats& st = e.launches.back();
  st.kernel = info.name;
  st.file = file;
  st.line = line;
  st.grid = grid;
  st.block = block;
  st.smem_static = info.static_smem;
  st.smem_dynamic = smem;
  if (!e.execute) return cudaSuccess;
  e.stats = &st;
  e.kernel = &info;
  e.kernel_name = info.name;
  e.grid = grid;
  e.block = block;
  e.n_threads = static_cast<int>(threads);
  e.threads.assign(e.n_threads, Thread{});
  for (int i = 0; i < e.n_threads; ++i) {
    Thread& t = e.threads[i];
    t.tid = i;
    t.idx = {static_cast<unsigned>(i % block.x), static_cast<unsigned>(i / block.x % block.y),
             static_cast<unsigned>(i / (block.x * block.y))};
    t.stack = stack_for(i);
  }
  e.warps.assign((e.n_threads + 31) / 32, Warp{});
  e.dynamic_bytes = smem;
  e.dynamic_buf.assign(smem + 2 * Emulator::kGuard, 0);
  e.shared.clear();
  {
    SharedRegion dyn;
    dyn.lo = reinterpret_cast<uintptr_t>(e.dynamic_buf.data());
    dyn.hi = dyn.lo + e.dynamic_buf.size();
    dyn.name = "dynamic shared memory";
    dyn.shadow.resize(e.dynamic_buf.size());
    e.shared.push_back(std::move(dyn));
  }
  for (const SharedVar& v : info.vars) {
    SharedRegion r;
    r.lo = v.lo;
    r.hi = v.hi;
    r.name = v.name;
    r.shadow.resize(v.hi - v.lo);
    e.shared.push_back(std::move(r));
  }
  g_start = {thunk, ctx};
  e.running = true;
  try {
    for (unsigned z = 0; z < grid.z; ++z) {
      for (unsigned y = 0; y < grid.y; ++y) {
        for (unsigned x = 0; x < grid.x; ++x) {
          e.block_idx = e.reverse_blocks
                            ? uint3{grid.x - 1 - x, grid.y - 1 - y, grid.z - 1 - z}
                            : uint3{x, y, z};
          run_block();
        }
      }
    }
  } catch (...) {
    e.running = false;
    e.cur = nullptr;
    e.stats = nullptr;
    throw;
  }
  e.running = false;
  e.stats = nullptr;
  return cudaSuccess;
}

}  // namespace cuda_emu

// ------------------------------------------------------------------------ CUDA runtime calls

cudaError_t cudaGetLastError() {
  cuda_emu::Emulator& e = cuda_emu::emu();
  const cudaError_t err = e.last_error;
  e.last_error = cudaSuccess;
  return err;
}

cudaError_t cudaPeekAtLastError() { return cuda_emu::emu().last_error; }

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
  }
  return "unknown error";
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) {
  if (bytes == 0) return cudaSuccess;
  const uintptr_t a = reinterpret_cast<uintptr_t>(ptr);
  const cuda_emu::Alloc* al = cuda_emu::find_alloc(a);
  if (al == nullptr || a + bytes > al->hi || !al->writable || al->param) {
    cuda_emu::fail("cudaMemsetAsync of %zu bytes at 0x%lx outside a writable allocation (%s)",
                   bytes, static_cast<unsigned long>(a), cuda_emu::nearest_alloc(a).c_str());
  }
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}

// ----------------------------------------------------------- the hooks of -fsanitize=thread

extern "C" {
#define CUDA_EMU_HOOKS(n)                                                                  \
  void __tsan_read##n(void* a) { cuda_emu::access(a, n, false, __builtin_return_address(0)); } \
  void __tsan_write##n(void* a) { cuda_emu::access(a, n, true, __builtin_return_address(0)); } \
  void __tsan_unaligned_read##n(void* a) {                                                 \
    cuda_emu::access(a, n, false, __builtin_return_address(0));                            \
  }                                                                                        \
  void __tsan_unaligned_write##n(void* a) {                                                \
    cuda_emu::access(a, n, true, __builtin_return_address(0));                             \
  }
CUDA_EMU_HOOKS(1)
CUDA_EMU_HOOKS(2)
CUDA_EMU_HOOKS(4)
CUDA_EMU_HOOKS(8)
CUDA_EMU_HOOKS(16)
#undef CUDA_EMU_HOOKS
void __tsan_read_range(void* a, unsigned long n) {
  if (n) cuda_emu::access(a, n, false, __builtin_return_address(0));
}
void __tsan_write_range(void* a, unsigned long n) {
  if (n) cuda_emu::access(a, n, true, __builtin_return_address(0));
}
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void*, void*) {}
void __tsan_vptr_read(void*) {}

// --------------------------------------------------------------- the lab's control interface

void cuda_emu_set_execute(int execute) { cuda_emu::emu().execute = execute != 0; }

void cuda_emu_set_reverse_blocks(int reverse) { cuda_emu::emu().reverse_blocks = reverse != 0; }

int cuda_emu_set_arch(int arch) {
  cuda_emu::emu().arch = arch;
  return 0;
}

uintptr_t cuda_emu_module_base() {
  cuda_emu::Emulator& e = cuda_emu::emu();
  if (e.module_base == 0) e.module_base = cuda_emu::module_base();
  return e.module_base;
}

// A kernel at `offset` (from the symbol table) and its name.
void cuda_emu_register_kernel(uintptr_t offset, const char* name) {
  cuda_emu::Emulator& e = cuda_emu::emu();
  cuda_emu::KernelInfo& k = e.kernels[cuda_emu_module_base() + offset];
  k.name = name;
}

// A __shared__ variable of the kernel at kernel_offset.
void cuda_emu_register_shared(uintptr_t kernel_offset, uintptr_t offset, uintptr_t size,
                              const char* name) {
  cuda_emu::Emulator& e = cuda_emu::emu();
  cuda_emu::KernelInfo& k = e.kernels[cuda_emu_module_base() + kernel_offset];
  const uintptr_t lo = cuda_emu_module_base() + offset;
  k.vars.push_back({lo, lo + size, name});
  // ptxas lays the variables out in order, each at its own alignment; summed sizes are what
  // cuobjdump reports for these kernels.
  k.static_smem += size;
}

void cuda_emu_reset_attributes() {
  for (auto& kv : cuda_emu::emu().kernels) kv.second.max_dynamic_smem = -1;
}

void cuda_emu_register_alloc(void* p, uintptr_t bytes, int writable, const char* name) {
  cuda_emu::Emulator& e = cuda_emu::emu();
  const uintptr_t lo = reinterpret_cast<uintptr_t>(p);
  cuda_emu::Alloc al{lo, lo + bytes, name, writable != 0, false};
  auto it = std::upper_bound(e.allocs.begin(), e.allocs.end(), lo,
                             [](uintptr_t x, const cuda_emu::Alloc& a) { return x < a.lo; });
  e.allocs.insert(it, al);
}

void cuda_emu_clear_allocs() {
  cuda_emu::Emulator& e = cuda_emu::emu();
  e.allocs.erase(std::remove_if(e.allocs.begin(), e.allocs.end(),
                                [](const cuda_emu::Alloc& a) { return !a.param; }),
                 e.allocs.end());
}

int cuda_emu_num_launches() { return static_cast<int>(cuda_emu::emu().launches.size()); }

// Launch i: name, launch site, and 20 integers: grid xyz, block xyz, smem static, dynamic,
// requests / sectors / lines for load, store, atomic (9), atomics, accesses, line.
const char* cuda_emu_launch_info(int i, long long* out, const char** file) {
  const cuda_emu::LaunchStats& s = cuda_emu::emu().launches.at(i);
  const long long v[] = {s.grid.x,       s.grid.y,       s.grid.z,       s.block.x,
                         s.block.y,      s.block.z,      static_cast<long long>(s.smem_static),
                         static_cast<long long>(s.smem_dynamic),
                         static_cast<long long>(s.requests[0]), static_cast<long long>(s.sectors[0]),
                         static_cast<long long>(s.lines[0]),    static_cast<long long>(s.requests[1]),
                         static_cast<long long>(s.sectors[1]),  static_cast<long long>(s.lines[1]),
                         static_cast<long long>(s.requests[2]), static_cast<long long>(s.sectors[2]),
                         static_cast<long long>(s.lines[2]),    static_cast<long long>(s.atomics),
                         static_cast<long long>(s.accesses),    s.line};
  std::memcpy(out, v, sizeof v);
  *file = s.file.c_str();
  return s.kernel.c_str();
}

void cuda_emu_clear_launches() { cuda_emu::emu().launches.clear(); }

// The message of the last launch-configuration error (cudaGetLastError's), if any.
const char* cuda_emu_last_message() { return cuda_emu::emu().last_message.c_str(); }
void cuda_emu_clear_error() {
  cuda_emu::emu().last_error = cudaSuccess;
  cuda_emu::emu().last_message.clear();
}
}
