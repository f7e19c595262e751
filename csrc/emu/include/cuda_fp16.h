// Shadows <cuda_fp16.h> in the kernel lab's CPU build (see ../cuda_emu.h).
#pragma once
#include "../cuda_emu.h"
