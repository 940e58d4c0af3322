// csrmma (experimental probe): a pruned 1x1 convolution (stride 1, no padding) on tensor cores,
// for fp16 activations with fp32 accumulation. Output channels go in groups of 16; a group
// multiplies only the input channels that one of its 16 rows uses (the column union: 56% of
// them at 95% sparsity, 81% at 90%), 16 at a time (a k-step), with mma.m16n8k16: A = the
// group's weights on those 16 channels (packed per lane by csrmma/family.py), B = the input of
// those channels at 8 pixels, gathered from the block's staged tile with 16-bit shared loads.
//
// Block: WARPS warps, one group each, over TP = 8 * NT pixels of one image. The input is staged
// CC channels at a time; each group's k-steps are cut at the chunk edges (kstart).
// Fragments (PTX ISA, mma.m16n8k16, .f16 A/B, .f32 C): lane = 4 * g + t;
//   A regs {A[g][2t..2t+1]}, {A[g+8][2t..]}, {A[g][2t+8..]}, {A[g+8][2t+8..]};
//   B regs {B[2t..2t+1][g]}, {B[2t+8..2t+9][g]};  C c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][..].
#include <cuda_fp16.h>

#ifndef NT
#define NT 8
#endif
#ifndef WARPS
#define WARPS 4
#endif
#ifndef CC
#define CC 64
#endif
#define TP (8 * NT)
#define ROW (TP + 8)  // halves per staged channel: 16 bytes of padding spread the banks

__device__ __forceinline__ void mma16816(float (&c)[4], const uint4& a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned pack(__half lo, __half hi) {
    return (unsigned)__half_as_ushort(lo) | ((unsigned)__half_as_ushort(hi) << 16);
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
csrmma(const __half* __restrict__ x, __half* __restrict__ y, const __half* __restrict__ res,
       const float* __restrict__ scale, const float* __restrict__ bias,
       const uint4* __restrict__ afrag,     // [k-step][32 lanes]: the lane's A registers
       const ushort4* __restrict__ cols,    // [k-step][t]: chunk channels of columns 2t, 2t+1, 2t+8, 2t+9
       const int* __restrict__ kstart,      // [group][chunks + 1]: each chunk's first k-step
       int C, int K, int HW, int chunks, int groups, int relu)
{
    __shared__ __half tile[CC * ROW];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int tiles = (HW + TP - 1) / TP;
    const int img = blockIdx.x / tiles, p0 = (blockIdx.x % tiles) * TP;
    const int group = blockIdx.y * WARPS + warp;  // a warp past the last group only stages
    const __half* xin = x + (size_t)img * C * HW;
    float acc[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    const int* ks = kstart + (size_t)min(group, groups - 1) * (chunks + 1);
    for (int chunk = 0; chunk < chunks; ++chunk) {
        const int c0 = chunk * CC;
        for (int i = threadIdx.x; i < CC * TP; i += WARPS * 32) {  // zeros past the image or C
            const int c = i / TP, p = i - c * TP;
            tile[c * ROW + p] = (c0 + c < C && p0 + p < HW) ? xin[(size_t)(c0 + c) * HW + p0 + p]
                                                             : __float2half(0.f);
        }
        __syncthreads();
        if (group < groups) {
            for (int k = ks[chunk]; k < ks[chunk + 1]; ++k) {
                const uint4 a = afrag[(size_t)k * 32 + lane];
                const ushort4 cc = cols[(size_t)k * 4 + t];
                const __half* r0 = tile + cc.x * ROW + g;
                const __half* r1 = tile + cc.y * ROW + g;
                const __half* r2 = tile + cc.z * ROW + g;
                const __half* r3 = tile + cc.w * ROW + g;
#pragma unroll
                for (int n = 0; n < NT; ++n)
                    mma16816(acc[n], a, pack(r0[8 * n], r1[8 * n]), pack(r2[8 * n], r3[8 * n]));
            }
        }
        __syncthreads();
    }
    if (group >= groups)
        return;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int ch = group * 16 + g + (i >= 2 ? 8 : 0);
            const int p = p0 + 8 * n + 2 * t + (i & 1);
            if (ch < K && p < HW) {
                const size_t o = ((size_t)img * K + ch) * HW + p;
                float v = acc[n][i] * scale[ch] + bias[ch];
                if (res)
                    v += __half2float(res[o]);
                if (relu)
                    v = fmaxf(v, 0.f);
                y[o] = __float2half(v);
            }
        }
    }
}
