// csrmma (experimental probe): a pruned convolution (stride 1, any padding, KH x KW kernel) on
// tensor cores, for fp16 activations with fp32 accumulation. Output channels go in groups of 16;
// a group multiplies only the input columns (channel, kh, kw) one of its 16 rows uses (the column
// union: 56% of them at 95% sparsity, 81% at 90%), 16 at a time (a k-step), with mma.m16n8k16:
// A = the group's weights on those 16 columns (packed per lane by csrmma/family.py), B = the
// input of those columns at 8 pixels, gathered from the block's staged tile with 16-bit loads.
//
// Block: WARPS warps, one group each, over an output tile of NT rows x 8 columns of one image
// (n-tile n = row n); the input under it (NT + KH - 1 rows x 8 + KW - 1 columns, zeros outside
// the image) is staged CC channels at a time, and each group's k-steps are cut at the chunk
// edges (kstart). A column's entry in `cols` is its offset in the staged chunk.
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
#ifndef KH
#define KH 1
#endif
#ifndef KW
#define KW 1
#endif
#define RW (8 + KW - 1)             // staged columns per row
#define PLANE ((NT + KH - 1) * RW)  // staged halves per channel
// Channels lie CS halves apart, CS = 8 (mod 16): the four columns a 16-bit load gathers (one per
// t) then start in different banks more often than not (at CS = PLANE = 64, a 1x1 tile, they all
// started at bank 0: ~3.6-way conflicts).
#define CS (PLANE + (8 - PLANE % 16 + 16) % 16)

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
       const ushort4* __restrict__ cols,    // [k-step][t]: staged offsets of columns 2t, 2t+1, 2t+8, 2t+9
       const int* __restrict__ kstart,      // [group][chunks + 1]: each chunk's first k-step
       int C, int K, int H, int W, int OH, int OW, int PH, int PW, int chunks, int groups, int relu)
{
    __shared__ __half tile[CC * CS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int tw = (OW + 7) / 8, th = (OH + NT - 1) / NT;
    const int img = blockIdx.x / (th * tw), rest = blockIdx.x % (th * tw);
    const int oh0 = (rest / tw) * NT, ow0 = (rest % tw) * 8;
    const int group = blockIdx.y * WARPS + warp;  // a warp past the last group only stages
    const __half* xin = x + (size_t)img * C * H * W;
    float acc[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    const int* ks = kstart + (size_t)min(group, groups - 1) * (chunks + 1);
    for (int chunk = 0; chunk < chunks; ++chunk) {
        const int c0 = chunk * CC;
        // zeros outside the image; channels past C are never read (no column points there)
        const int staged = min(CC, C - c0) * PLANE;
        for (int i = threadIdx.x; i < staged; i += WARPS * 32) {
            const int c = i / PLANE, r = (i - c * PLANE) / RW, q = i - c * PLANE - r * RW;
            const int ih = oh0 + r - PH, iw = ow0 + q - PW;
            tile[c * CS + r * RW + q] = (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                            ? xin[((size_t)(c0 + c) * H + ih) * W + iw] : __float2half(0.f);
        }
        __syncthreads();
        if (group < groups) {
            const int kend = ks[chunk + 1];
            int k = ks[chunk];
            uint4 a = make_uint4(0, 0, 0, 0), an = a;
            ushort4 cc = make_ushort4(0, 0, 0, 0), ccn = cc;
            if (k < kend) {
                a = afrag[(size_t)k * 32 + lane];
                cc = cols[(size_t)k * 4 + t];
            }
            for (; k < kend; ++k, a = an, cc = ccn) {
                if (k + 1 < kend) {  // the next k-step's tables in flight while this one multiplies
                    an = afrag[(size_t)(k + 1) * 32 + lane];
                    ccn = cols[(size_t)(k + 1) * 4 + t];
                }
                const __half* r0 = tile + cc.x + g;
                const __half* r1 = tile + cc.y + g;
                const __half* r2 = tile + cc.z + g;
                const __half* r3 = tile + cc.w + g;
#pragma unroll
                for (int n = 0; n < NT; ++n)
                    mma16816(acc[n], a, pack(r0[RW * n], r1[RW * n]), pack(r2[RW * n], r3[RW * n]));
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
            const int oh = oh0 + n, ow = ow0 + 2 * t + (i & 1);
            if (ch < K && oh < OH && ow < OW) {
                const size_t o = (((size_t)img * K + ch) * OH + oh) * OW + ow;
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
