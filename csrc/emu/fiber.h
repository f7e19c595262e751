// Fibers for the emulator's CUDA threads: each thread runs on its own stack and gives the CPU
// back by switching stack pointers (x86-64 hosts only).
#pragma once

#include <cstddef>

// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores
// the stack pointer in *save_sp, and resumes the context whose stack pointer is next_sp.
extern "C" void cuda_emu_switch(void** save_sp, void* next_sp);

namespace cuda_emu {

// A stack of `bytes` with a guard page below it (an overflow faults instead of corrupting memory);
// stacks live as long as the process.
char* fiber_stack(size_t bytes);

// The stack pointer of a new context on [stack, stack + bytes): the first cuda_emu_switch to it
// calls entry(arg), which must never return (it switches away for good instead).
void* fiber_stack_pointer(char* stack, size_t bytes, void (*entry)(void*), void* arg);

}  // namespace cuda_emu
