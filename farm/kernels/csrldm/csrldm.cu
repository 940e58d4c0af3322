// csrldm: a pruned stride-1 convolution on tensor cores, fp16 activations, fp32 accumulation.
// Output channels go in groups of 16 (mma.m16n8k16's M). A group multiplies only the input
// columns (channel, kh, kw) that one of its 16 rows uses (its column union), 16 at a time (a
// k-step): A = the group's weights on those columns, packed per lane by csrldm/family.py; B = the
// input under those columns at 8 output pixels, loaded by ldmatrix.trans.
//
// Why ldmatrix can gather: it takes one row address per lane. The block stages its input so that
// every (channel, kh, kw) column at every n-tile (8 neighbouring output pixels of one row) is one
// aligned 16-byte row: KW copies of each channel's rows, copy s shifted by s pixels. Row
// (ct, c, s, r) holds x[c][oh0 + r - PH][8 ct + s - PW + 0..7], zeros outside the image, at
// 16-byte slot ((ct * CC + c) * KW + s) * RP + r. A column's B row at n-tile (row jr, col tile
// jc) is then slot base + jc * CC * KW * RP + jr: one add per ldmatrix. RP is odd, so the slots
// of a k-step's columns fall in different bank windows more often; family.py orders each
// k-step's columns so that the 8 rows of one 8x8 matrix sit in 8 windows where it can.
//
// Block: WG x SPLIT warps over R output rows of one image (R * CT n-tiles) and WG * GPW groups;
// warp w takes groups w % WG + WG * i (i < GPW) and n-tiles (w / WG) * NTW .. + NTW - 1. Input
// channels are staged CC at a time, each thread one (channel, row, column tile) with VEC-wide
// loads (VEC divides W, so a vector lies wholly inside a row or wholly outside) from which it
// cuts the KW shifted rows. The k-steps lie chunk by chunk, group by group (kstart), so the
// block's groups' k-steps of one chunk are one stretch of the tables: staged with the input, as
// an A fragment fetched from L2 a k-step ahead waited out L2's latency at every step (the time
// hardly moved with the number of k-steps).
// Fragments (PTX ISA, mma.m16n8k16, .f16 A/B, .f32 C): lane = 4 g + t;
//   A regs {A[g][2t..2t+1]}, {A[g+8][2t..]}, {A[g][2t+8..]}, {A[g+8][2t+8..]};
//   C c0,c1 = C[g][2t..2t+1] (pixels 2t, 2t+1 of the n-tile), c2,c3 = C[g+8][..].
#include <cuda_fp16.h>

#ifndef R
#define R 7
#endif
#ifndef CT
#define CT 2
#endif
#ifndef NTW
#define NTW 2
#endif
#ifndef WG
#define WG 4
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
#ifndef PH
#define PH 0
#endif
#ifndef PW
#define PW 0
#endif
#ifndef GPW
#define GPW 1
#endif
#ifndef VEC
#define VEC 1
#endif
#ifndef MINB
#define MINB 1
#endif
#define LEAD ((VEC - PW % VEC) % VEC)              // halves loaded before a row's first column
#define NV ((LEAD + 8 + KW - 1 + VEC - 1) / VEC)  // vectors loaded for one (channel, row, tile)
#define NB (R * CT)                          // n-tiles a block computes
#define SPLIT ((NB + NTW - 1) / NTW)         // warps per group
#define RP ((R + KH - 1) | 1)                // staged rows per (channel, shift), odd
#define SLOTS (CT * CC * KW * RP)            // 16-byte rows of the staged chunk

__device__ __forceinline__ void mma16816(float (&c)[4], const uint4& a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldsm_x4_trans(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2,
                                              unsigned& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}

template <int V> struct Vec;
template <> struct Vec<1> { typedef unsigned short T; };
template <> struct Vec<2> { typedef unsigned T; };
template <> struct Vec<4> { typedef uint2 T; };
template <> struct Vec<8> { typedef uint4 T; };

// One (channel, input row, column tile): the KW rows of 8 halves, shifted 0..KW-1, into the tile.
__device__ __forceinline__ void stage_row(const __half* __restrict__ row, bool inside, int w0, int W,
                                          uint4* __restrict__ dst) {
    typedef typename Vec<VEC>::T V;
    __align__(16) unsigned short h[NV * VEC];
#pragma unroll
    for (int i = 0; i < NV; ++i) {
        const int w = w0 + i * VEC;
        V v;
        if (inside && w >= 0 && w < W)
            v = *reinterpret_cast<const V*>(row + w);
        else
            v = V();
        *reinterpret_cast<V*>(h + i * VEC) = v;
    }
#pragma unroll
    for (int s = 0; s < KW; ++s) {
        uint4 o;
        o.x = h[LEAD + s + 0] | ((unsigned)h[LEAD + s + 1] << 16);
        o.y = h[LEAD + s + 2] | ((unsigned)h[LEAD + s + 3] << 16);
        o.z = h[LEAD + s + 4] | ((unsigned)h[LEAD + s + 5] << 16);
        o.w = h[LEAD + s + 6] | ((unsigned)h[LEAD + s + 7] << 16);
        dst[s * RP] = o;
    }
}

extern "C" __global__ void __launch_bounds__(WG * SPLIT * 32, MINB)
csrldm(const __half* __restrict__ x, __half* __restrict__ y, const __half* __restrict__ res,
       const float* __restrict__ scale, const float* __restrict__ bias,
       const uint4* __restrict__ afrag,  // [k-step][32 lanes]: the lane's A registers
       const int* __restrict__ cols,     // [k-step][16]: byte offset of each column's slot
       const int* __restrict__ kstart,   // [chunk * groups + group]: its first k-step, then the end
       int C, int K, int H, int W, int OH, int OW, int chunks, int groups, int relu,
       int asteps)                       // room for this many staged k-steps (the block's most)
{
    extern __shared__ uint4 tile[];  // SLOTS rows of 8 halves, then the staged tables
    uint4* const sa = tile + SLOTS;                               // [k-step][32 lanes]
    int* const sc = reinterpret_cast<int*>(sa + (size_t)asteps * 32);  // [k-step][16]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int rb = (OH + R - 1) / R;
    const int img = blockIdx.x / rb, oh0 = (blockIdx.x % rb) * R;
    const int group0 = blockIdx.y * WG * GPW + warp % WG;  // its first group
    const int j0 = (warp / WG) * NTW;                      // its first n-tile
    const __half* xin = x + (size_t)img * C * H * W;
    // Slots no column reads may still be read by the zero-weight padding columns: never NaN.
    for (int i = threadIdx.x; i < SLOTS; i += blockDim.x)
        tile[i] = make_uint4(0, 0, 0, 0);
    // this lane's ldmatrix row: k = lane % 16 of the k-step, n-tile j0 + 2p + lane / 16
    const int krow = lane & 15;
    unsigned off[NTW / 2];
#pragma unroll
    for (int p = 0; p < NTW / 2; ++p) {
        const int j = min(j0 + 2 * p + (lane >> 4), NB - 1);
        off[p] = (unsigned)__cvta_generic_to_shared(tile) + 16u * ((j % CT) * CC * KW * RP + j / CT);
    }
    float acc[GPW][NTW][4];
#pragma unroll
    for (int q = 0; q < GPW; ++q)
#pragma unroll
        for (int n = 0; n < NTW; ++n)
            acc[q][n][0] = acc[q][n][1] = acc[q][n][2] = acc[q][n][3] = 0.f;
    for (int chunk = 0; chunk < chunks; ++chunk) {
        const int c0 = chunk * CC, cn = min(CC, C - c0);
        __syncthreads();  // the previous chunk's reads are done (and the zeroing)
        for (int i = threadIdx.x; i < cn * RP * CT; i += blockDim.x) {
            const int ct = i % CT, r = (i / CT) % RP, c = i / (CT * RP);
            const int ih = oh0 + r - PH;
            stage_row(xin + ((size_t)(c0 + c) * H + ih) * W, ih >= 0 && ih < H, 8 * ct - PW - LEAD, W,
                      tile + ((ct * CC + c) * KW) * RP + r);
        }
        const int* ks = kstart + (size_t)chunk * groups;
        const int gb = blockIdx.y * WG * GPW, kb = ks[gb], ke = ks[min(gb + WG * GPW, groups)];
        for (int i = threadIdx.x; i < (ke - kb) * 32; i += blockDim.x)
            sa[i] = afrag[(size_t)kb * 32 + i];
        for (int i = threadIdx.x; i < (ke - kb) * 16; i += blockDim.x)
            sc[i] = cols[(size_t)kb * 16 + i];
        __syncthreads();
#pragma unroll
        for (int q = 0; q < GPW; ++q) {
            const int group = group0 + q * WG;
            if (group >= groups || j0 >= NB)
                continue;  // a warp past the last group only stages
            const int kend = ks[group + 1] - kb;
            int k = ks[group] - kb;
            uint4 a = make_uint4(0, 0, 0, 0), an = a;
            int cb = 0, cbn = 0;
            if (k < kend) {
                a = sa[k * 32 + lane];
                cb = sc[k * 16 + krow];
            }
            for (; k < kend; ++k, a = an, cb = cbn) {
                if (k + 1 < kend) {  // the next k-step's tables on their way while this one multiplies
                    an = sa[(k + 1) * 32 + lane];
                    cbn = sc[(k + 1) * 16 + krow];
                }
#pragma unroll
                for (int p = 0; p < NTW / 2; ++p) {
                    unsigned b0, b1, b2, b3;
                    ldsm_x4_trans(off[p] + cb, b0, b1, b2, b3);
                    mma16816(acc[q][2 * p], a, b0, b1);
                    mma16816(acc[q][2 * p + 1], a, b2, b3);
                }
            }
        }
    }
#pragma unroll
    for (int q = 0; q < GPW; ++q) {
        const int group = group0 + q * WG;
        if (group >= groups)
            break;
#pragma unroll
        for (int n = 0; n < NTW; ++n) {
            const int j = j0 + n;
            const int oh = oh0 + j / CT;
            if (j >= NB || oh >= OH)
                continue;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int ch = group * 16 + g + (i >= 2 ? 8 : 0);
                const int ow = (j % CT) * 8 + 2 * t + (i & 1);
                if (ch < K && ow < OW) {
                    const size_t o = (((size_t)img * K + ch) * OH + oh) * OW + ow;
                    float v = acc[q][n][i] * scale[ch] + bias[ch];
                    if (res)
                        v += __half2float(res[o]);
                    if (relu)
                        v = fmaxf(v, 0.f);
                    y[o] = __float2half(v);
                }
            }
        }
    }
}
