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
// channels are staged CC at a time, each thread ITEMS (channel, row, column tile)s with VEC-wide
// loads (VEC divides W, so a vector lies wholly inside a row or wholly outside) from which it
// cuts the KW shifted rows. Two buffers: the next chunk's loads are issued before this chunk's
// k-steps and stored after them, since with one buffer the block waited out the loads' latency
// at every chunk (ncu: 46% of stalls on L1TEX at one block an SM). The k-steps lie chunk by chunk,
// group by group (kstart); each warp fetches its A fragments from L2 PF k-steps ahead.
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
#ifndef PF
#define PF 4
#endif
#ifndef OWD
#define OWD 8                                // the output's width (the kernel is built per width)
#endif
#define LEAD ((VEC - PW % VEC) % VEC)              // halves loaded before a row's first column
#define NV ((LEAD + 8 + KW - 1 + VEC - 1) / VEC)  // vectors loaded for one (channel, row, tile)
#define NB (R * CT)                          // n-tiles a block computes
#define SPLIT ((NB + NTW - 1) / NTW)         // warps per group
#define RP ((R + KH - 1) | 1)                // staged rows per (channel, shift), odd
#define SLOTS (CT * CC * KW * RP)            // 16-byte rows of the staged chunk
#define THREADS (WG * SPLIT * 32)
#define OS (NB * 8 + 4)                      // floats a channel of the output pass, padded
#define ITEMS ((CC * RP * CT + THREADS - 1) / THREADS)  // (channel, row, column tile)s a thread stages

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
typedef typename Vec<VEC>::T V;

// The vectors of this thread's (channel, input row, column tile)s of chunk c0, into registers.
__device__ __forceinline__ void load_chunk(V (&pre)[ITEMS][NV], const __half* __restrict__ xin, int c0, int cn,
                                           int oh0, int H, int W) {
#pragma unroll
    for (int it = 0; it < ITEMS; ++it) {
        const int i = threadIdx.x + it * THREADS;
        const int ct = i % CT, r = (i / CT) % RP, c = i / (CT * RP);
        const int ih = oh0 + r - PH, w0 = 8 * ct - PW - LEAD;
        const bool inside = i < cn * RP * CT && ih >= 0 && ih < H;
        const __half* row = xin + ((size_t)(c0 + c) * H + ih) * W;
#pragma unroll
        for (int v = 0; v < NV; ++v) {
            const int w = w0 + v * VEC;
            pre[it][v] = (inside && w >= 0 && w < W) ? *reinterpret_cast<const V*>(row + w) : V();
        }
    }
}

// ... and from registers the KW shifted rows of 8 halves each into the tile.
__device__ __forceinline__ void store_chunk(const V (&pre)[ITEMS][NV], uint4* __restrict__ tile, int cn) {
#pragma unroll
    for (int it = 0; it < ITEMS; ++it) {
        const int i = threadIdx.x + it * THREADS;
        if (i >= cn * RP * CT)
            break;
        const int ct = i % CT, r = (i / CT) % RP, c = i / (CT * RP);
        __align__(16) unsigned short h[NV * VEC];
#pragma unroll
        for (int v = 0; v < NV; ++v)
            *reinterpret_cast<V*>(h + v * VEC) = pre[it][v];
#pragma unroll
        for (int s = 0; s < KW; ++s) {
            uint4 o;
            o.x = h[LEAD + s + 0] | ((unsigned)h[LEAD + s + 1] << 16);
            o.y = h[LEAD + s + 2] | ((unsigned)h[LEAD + s + 3] << 16);
            o.z = h[LEAD + s + 4] | ((unsigned)h[LEAD + s + 5] << 16);
            o.w = h[LEAD + s + 6] | ((unsigned)h[LEAD + s + 7] << 16);
            tile[((ct * CC + c) * KW + s) * RP + r] = o;
        }
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, MINB)
csrldm(const __half* __restrict__ x, __half* __restrict__ y, const __half* __restrict__ res,
       const float* __restrict__ scale, const float* __restrict__ bias,
       const uint4* __restrict__ afrag,  // [k-step][32 lanes]: the lane's A registers
       const int* __restrict__ cols,     // [k-step][16]: byte offset of each column's slot
       const int* __restrict__ kstart,   // [chunk * groups + group]: its first k-step, then the end
       int C, int K, int H, int W, int OH, int chunks, int groups, int relu)  // the width: OWD
{
    extern __shared__ uint4 tile[];  // two buffers of SLOTS rows of 8 halves
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int rb = (OH + R - 1) / R;
    const int img = blockIdx.x / rb, oh0 = (blockIdx.x % rb) * R;
    const int group0 = blockIdx.y * WG * GPW + warp % WG;  // its first group
    const int j0 = (warp / WG) * NTW;                      // its first n-tile
    const __half* xin = x + (size_t)img * C * H * W;
    // Slots no column reads may still be read by the zero-weight padding columns: never NaN.
    for (int i = threadIdx.x; i < 2 * SLOTS; i += THREADS)
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
    V pre[ITEMS][NV];
    __syncthreads();  // zeroed before the first chunk lands
    load_chunk(pre, xin, 0, min(CC, C), oh0, H, W);
    store_chunk(pre, tile, min(CC, C));
    for (int chunk = 0; chunk < chunks; ++chunk) {
        const unsigned buf = (chunk & 1) * SLOTS * 16u;
        __syncthreads();  // this chunk is staged; every warp is done with the other buffer
        const int next = (chunk + 1) * CC;
        if (chunk + 1 < chunks)  // in flight while this chunk multiplies
            load_chunk(pre, xin, next, min(CC, C - next), oh0, H, W);
        const int* ks = kstart + (size_t)chunk * groups;
#pragma unroll
        for (int q = 0; q < GPW; ++q) {
            const int group = group0 + q * WG;
            if (group >= groups || j0 >= NB)
                continue;  // a warp past the last group only stages
            const int kend = ks[group + 1];
            // PF k-steps' tables in flight: one step ahead left each warp waiting out L2's latency
            // at every k-step (the time hardly moved with the number of k-steps)
            uint4 ar[PF];
            int cr[PF];
#pragma unroll
            for (int d = 0; d < PF; ++d) {
                const int k = ks[group] + d;
                if (k < kend) {
                    ar[d] = afrag[(size_t)k * 32 + lane];
                    cr[d] = cols[(size_t)k * 16 + krow];
                }
            }
            for (int k0 = ks[group]; k0 < kend; k0 += PF) {
#pragma unroll
                for (int d = 0; d < PF; ++d) {
                    const int k = k0 + d;
                    if (k >= kend)
                        break;
                    const uint4 a = ar[d];
                    const int cb = cr[d];
                    if (k + PF < kend) {
                        ar[d] = afrag[(size_t)(k + PF) * 32 + lane];
                        cr[d] = cols[(size_t)(k + PF) * 16 + krow];
                    }
#pragma unroll
                    for (int p = 0; p < NTW / 2; ++p) {
                        unsigned b0, b1, b2, b3;
                        ldsm_x4_trans(off[p] + buf + cb, b0, b1, b2, b3);
                        mma16816(acc[q][2 * p], a, b0, b1);
                        mma16816(acc[q][2 * p + 1], a, b2, b3);
                    }
                }
            }
        }
        if (chunk + 1 < chunks)
            store_chunk(pre, tile + ((chunk + 1) & 1) * SLOTS, min(CC, C - next));
    }
    // The epilogue goes through shared memory: a lane's accumulators are 2 pixels of 8 channels,
    // and stored straight from them every 16-byte piece of an output row was its own partial
    // sector (ncu: 2.4 M store sectors for 12.8 MB on l3 1x1up, and the epilogue's per-output
    // arithmetic was most of the 13 M instructions). Here a pass's channels land in the tile
    // (scaled, biased), then the block writes each channel's R x OW run of pixels in order.
    float* const out = reinterpret_cast<float*>(tile);
    const int npx = min(R, OH - oh0) * OWD;
    const size_t obase = ((size_t)img * K * OH + oh0) * OWD;
#pragma unroll
    for (int q = 0; q < GPW; ++q) {
        __syncthreads();  // the staged input (or the previous pass) is done with
        const int group = group0 + q * WG, cl = (warp % WG) * 16 + g;
        if (group < groups) {
            const int ch = group * 16 + g;
            const float s0 = ch < K ? scale[ch] : 0.f, b0 = ch < K ? bias[ch] : 0.f;
            const float s1 = ch + 8 < K ? scale[ch + 8] : 0.f, b1 = ch + 8 < K ? bias[ch + 8] : 0.f;
#pragma unroll
            for (int n = 0; n < NTW; ++n) {
                const int j = j0 + n;
                if (j >= NB)
                    break;
                float* o = out + cl * OS + j * 8 + 2 * t;
                *reinterpret_cast<float2*>(o) = make_float2(acc[q][n][0] * s0 + b0, acc[q][n][1] * s0 + b0);
                *reinterpret_cast<float2*>(o + 8 * OS) = make_float2(acc[q][n][2] * s1 + b1, acc[q][n][3] * s1 + b1);
            }
        }
        __syncthreads();
        const int c0 = (blockIdx.y * WG * GPW + q * WG) * 16, chs = min(WG * 16, K - c0);
        for (int c = warp; c < chs; c += THREADS / 32) {
            const size_t orow = obase + (size_t)(c0 + c) * OH * OWD;
            for (int p = lane; p < npx; p += 32) {
                float v = out[c * OS + (p / OWD) * CT * 8 + p % OWD];
                if (res)
                    v += __half2float(res[orow + p]);
                if (relu)
                    v = fmaxf(v, 0.f);
                y[orow + p] = __float2half(v);
            }
        }
    }
}
