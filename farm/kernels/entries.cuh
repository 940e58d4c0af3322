// Shared by the csrconv, csrtile and csrbatch families: the activation type and the table entry
// formats. An entry packs a key in its high bits (csrconv: the case; staged
// kernels: the offset in the staged patch) and the weight, or its code, in its low bits.
#include "act.cuh"

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
