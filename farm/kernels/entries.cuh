// Shared by every kernel family: activation type (fp32 or fp16 in memory, fp32 arithmetic) and
// the table entry formats. An entry packs a key in its high bits (csrconv: the case; staged
// kernels: the offset in the staged patch) and the weight, or its code, in its low bits.
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

#if WFMT == 0      // fp32: {key, float bits}
typedef uint2 entry_t;
#define E_KEY(e) ((int)(e).x)
#define E_W(e) __uint_as_float((e).y)
#elif WFMT == 1    // fp16: key << 16 | half bits
typedef unsigned int entry_t;
#define E_KEY(e) ((int)((e) >> 16))
#define E_W(e) __half2float(__ushort_as_half((unsigned short)((e) & 0xffffu)))
#elif WFMT == 2    // int8 linear: key << 8 | (int8) q; value = q * scale[row], scale in the epilogue
typedef unsigned int entry_t;
#define E_KEY(e) ((int)((e) >> 8))
#define E_W(e) ((float)(signed char)((e) & 0xffu))
#elif WFMT == 3    // codebook, codes up to 8 bits: key << 8 | code (cb: the codebook in shared memory)
typedef unsigned int entry_t;
#define E_KEY(e) ((int)((e) >> 8))
#define E_W(e) cb[(e) & 0xffu]
#elif WFMT == 4    // codebook, 4-bit codes: key << 4 | code, 16-bit entries
typedef unsigned short entry_t;
#define E_KEY(e) ((int)((e) >> 4))
#define E_W(e) cb[(e) & 0xfu]
#endif
