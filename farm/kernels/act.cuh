// Shared by every kernel family: the activation type (fp32 or fp16 in memory, fp32 arithmetic).
#include <cuda_fp16.h>

#if ACT_HALF
typedef __half act_t;
__device__ __forceinline__ float load_act(const act_t* p) { return __half2float(__ldg(p)); }
__device__ __forceinline__ act_t to_act(float v) { return __float2half_rn(v); }
#else
typedef float act_t;
__device__ __forceinline__ float load_act(const act_t* p) { return __ldg(p); }
__device__ __forceinline__ act_t to_act(float v) { return v; }
#endif
