// The context switch of the emulator's fibers (fiber.h).
#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <new>

#if !defined(__x86_64__)
#error "the kernel lab's CUDA emulator supports x86-64 hosts"
#endif

// A new context's first switch returns into the trampoline, which calls r13(r12).
extern "C" void cuda_emu_trampoline();

asm(R"(
  .text
  .globl cuda_emu_switch
  .type cuda_emu_switch,@function
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_emu_switch, .-cuda_emu_switch
  .globl cuda_emu_trampoline
  .type cuda_emu_trampoline,@function
cuda_emu_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size cuda_emu_trampoline, .-cuda_emu_trampoline
)");

namespace cuda_emu {

char* fiber_stack(size_t bytes) {
  const long page = sysconf(_SC_PAGESIZE);
  void* m = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  mprotect(m, page, PROT_NONE);
  return static_cast<char*>(m) + page;
}

void* fiber_stack_pointer(char* stack, size_t bytes, void (*entry)(void*), void* arg) {
  // The frame cuda_emu_switch pops: control words, r15..r12 (r12 = arg, r13 = entry), rbx, rbp,
  // then the return address (the trampoline); after `ret` the stack is 16-byte aligned.
  uintptr_t top = reinterpret_cast<uintptr_t>(stack) + bytes;
  top &= ~uintptr_t(15);
  uint64_t* sp = reinterpret_cast<uint64_t*>(top - 80);
  const uint32_t mxcsr = 0x1f80;   // the default: all exceptions masked, round to nearest
  const uint16_t fpucw = 0x037f;   // the x87 default
  uint64_t cw = 0;
  std::memcpy(&cw, &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(&cw) + 4, &fpucw, 2);
  sp[0] = cw;
  sp[1] = 0;                                          // r15
  sp[2] = 0;                                          // r14
  sp[3] = reinterpret_cast<uint64_t>(entry);          // r13
  sp[4] = reinterpret_cast<uint64_t>(arg);            // r12
  sp[5] = 0;                                          // rbx
  sp[6] = 0;                                          // rbp
  sp[7] = reinterpret_cast<uint64_t>(&cuda_emu_trampoline);
  return sp;
}

}  // namespace cuda_emu
