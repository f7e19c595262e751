// A tiny kernel with known resources for tests/test_kernel_report.py: 256 bytes of static shared
// memory and one per-tile loop with a block barrier, 4 steps per thread per iteration (kept rolled,
// as nvcc keeps the large tile loops of the scan kernels).
__global__ void __launch_bounds__(64) tiny_scan_kernel(float* out, const float* in, int tiles) {
  __shared__ float buf[64];
  float acc = 0.f;
#pragma unroll 1
  for (int t = 0; t < tiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc = acc * 0.5f + in[(t * 64 + threadIdx.x) * 4 + e];
    buf[threadIdx.x] = acc;
    __syncthreads();
    acc += buf[63 - threadIdx.x];
    __syncthreads();
  }
  out[threadIdx.x] = acc;
}
