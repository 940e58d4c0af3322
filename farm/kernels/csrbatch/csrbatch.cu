// Direct sparse convolution over groups of 4 images: one 16-byte shared-memory load per nonzero
// feeds 4 FMAs (the same pixel of 4 images), so the inner loop is load + 4 FMAs + entry decode.
//
// csrtile's inner loop spends one shared-memory load and several address/decode instructions on
// each FMA (212 M instructions for 11.6 M warp-FMAs on ResNet-50 l3 3x3 at batch 32, ncu). Here
// the staged input is laid out [channel][row][col][image of 4], so the 4 images of one pixel are
// one aligned float4 whatever the kernel offset: no alignment cases, no per-image address.
//
// A block owns RG x RB output channels, an output tile TH x TW and 4 images. Its threads form RG
// row groups (whole warps each, so a row's entries are a broadcast); a thread owns PX adjacent
// pixels of one output row, for the 4 images and the RB rows of its group: RB x PX x 4
// accumulators. The input is walked in chunks of CK channels staged in shared memory as fp32
// (zero outside the image and past the last image), with the chunk's entries beside it.
// (A staging loop with lanes along a staged row and four nonzeros in flight measured 9-25%
// slower on ResNet-50 l1-l3 3x3 at batch 32, H100, 2026-11-25; kept out.)
// Entries, weight decoding and epilogue are csrtile's (same table: offset in the staged patch in
// pixels, weight fp32 / fp16 / int8 / 8- or 4-bit codebook code).

#ifndef RB
#define RB 8
#define RG 1
#define TH 14
#define TW 14
#define PX 1
#define KH 3
#define KW 3
#define SH 1
#define SW 1
#define DH 1
#define DW 1
#define ACT_HALF 0
#define WFMT 0
#endif
#ifndef SB  // staged values each thread loads before storing them (loads in flight)
#define SB 8
#endif
#define NB 4
#define IH ((TH - 1) * SH + (KH - 1) * DH + 1)
#define IW ((TW - 1) * SW + (KW - 1) * DW + 1)
#define TXN ((TW + PX - 1) / PX)                 // threads across a tile row
#define GROUP_THREADS (((TH * TXN) + 31) / 32 * 32)
#define NTHREADS (RG * GROUP_THREADS)

#include "entries.cuh"
#define E_OFF(e) E_KEY(e)

__device__ __forceinline__ void fma4(float (&a)[NB], float w, const float4 v) {
  a[0] = fmaf(w, v.x, a[0]);
  a[1] = fmaf(w, v.y, a[1]);
  a[2] = fmaf(w, v.z, a[2]);
  a[3] = fmaf(w, v.w, a[3]);
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
csrbatch(const act_t* __restrict__ x, act_t* __restrict__ y, const act_t* __restrict__ res,
         const entry_t* __restrict__ tab, const int* __restrict__ cptr,
         const int* __restrict__ perm, const float* __restrict__ oscale,
         const float* __restrict__ bias, const float* __restrict__ codebook,
         int N, int C, int H, int W, int K, int OH, int OW, int padh, int padw,
         int TILES_H, int TILES_W, int CK, int NCHUNK, int relu) {
  // Dynamic shared memory: CK*IH*IW float4 of input, then the chunk's entries.
  extern __shared__ float4 xs[];
  entry_t* es = reinterpret_cast<entry_t*>(xs + CK * IH * IW);
#if WFMT >= 3
  __shared__ float cb[256];
  for (int i = threadIdx.x; i < 256; i += NTHREADS) cb[i] = codebook[i];
#endif
  __shared__ int rows_at[RG * RB + 1];
  const int tid = threadIdx.x, blk = blockIdx.y;
  const int rg = tid / GROUP_THREADS, t = tid - rg * GROUP_THREADS;
  const int ty = t / TXN, tx = t - (t / TXN) * TXN;
  const bool active = ty < TH;
  // blockIdx.x -> (image group, tile row, tile col)
  const int ntl = TILES_H * TILES_W;
  const int n0 = (blockIdx.x / ntl) * NB;
  const int t2 = blockIdx.x - (blockIdx.x / ntl) * ntl;
  const int oh0 = (t2 / TILES_W) * TH, ow0 = (t2 - (t2 / TILES_W) * TILES_W) * TW;
  const int ih0 = oh0 * SH - padh, iw0 = ow0 * SW - padw;
  const int base = active ? (ty * SH) * IW + tx * PX * SW : 0;

  float acc[RB][PX][NB];
#pragma unroll
  for (int r = 0; r < RB; ++r)
#pragma unroll
    for (int p = 0; p < PX; ++p)
#pragma unroll
      for (int b = 0; b < NB; ++b) acc[r][p][b] = 0.f;

  float* xf = reinterpret_cast<float*>(xs);
  const long long plane = (long long)H * W;
  for (int ch = 0; ch < NCHUNK; ++ch) {
    const int c0 = ch * CK;
    const int cc_n = min(CK, C - c0);
    const int* cp = cptr + ((long long)blk * NCHUNK + ch) * (RG * RB + 1);
    const int e_begin = __ldg(cp), e_count = __ldg(cp + RG * RB) - e_begin;
    __syncthreads();  // the previous chunk is no longer read
    // strided, as in csrtile: a block may have fewer threads than RG * RB + 1 row bounds
    for (int i = tid; i <= RG * RB; i += NTHREADS) rows_at[i] = __ldg(cp + i) - e_begin;
    for (int i = tid; i < e_count; i += NTHREADS) es[i] = tab[e_begin + i];
    // Stage: element idx -> (cc, image b, iy, ix), ix fastest so a warp reads a global row;
    // stored at [(cc*IH + iy)*IW + ix][b]. SB loads in flight before their stores.
    const int total = cc_n * NB * IH * IW;
    for (int first = tid; first < total; first += NTHREADS * SB) {
      float v[SB];
      int dst[SB];
#pragma unroll
      for (int u = 0; u < SB; ++u) {
        const int idx = first + u * NTHREADS;
        v[u] = 0.f;
        dst[u] = -1;
        if (idx < total) {
          const int cc = idx / (NB * IH * IW);
          const int r1 = idx - cc * (NB * IH * IW);
          const int b = r1 / (IH * IW);
          const int r2 = r1 - b * (IH * IW);
          const int iy = r2 / IW, ix = r2 - (r2 / IW) * IW;
          dst[u] = ((cc * IH + iy) * IW + ix) * NB + b;
          const int ih = ih0 + iy, iw = iw0 + ix, n = n0 + b;
          if (n < N && ih >= 0 && ih < H && iw >= 0 && iw < W)
            v[u] = load_act(x + ((long long)n * C + c0 + cc) * plane + (long long)ih * W + iw);
        }
      }
#pragma unroll
      for (int u = 0; u < SB; ++u)
        if (dst[u] >= 0) xf[dst[u]] = v[u];
    }
    __syncthreads();
    const float4* xb = xs + base;
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      // Rows are dealt to groups round-robin (r * RG + rg): balance_rows orders a block's rows
      // heaviest first, so consecutive slots would give group 0 all the heavy rows.
      const int i0 = rows_at[r * RG + rg], i1 = rows_at[r * RG + rg + 1];
      int i = i0;
      for (; i + 2 <= i1; i += 2) {  // two nonzeros: 2*PX 16-byte loads in flight
        const entry_t e0 = es[i], e1 = es[i + 1];
        const float w0 = E_W(e0), w1 = E_W(e1);
        float4 a[PX], b[PX];
#pragma unroll
        for (int p = 0; p < PX; ++p) {
          a[p] = xb[E_OFF(e0) + p * SW];
          b[p] = xb[E_OFF(e1) + p * SW];
        }
#pragma unroll
        for (int p = 0; p < PX; ++p) {
          fma4(acc[r][p], w0, a[p]);
          fma4(acc[r][p], w1, b[p]);
        }
      }
      if (i < i1) {
        const entry_t e0 = es[i];
        const float w0 = E_W(e0);
#pragma unroll
        for (int p = 0; p < PX; ++p) fma4(acc[r][p], w0, xb[E_OFF(e0) + p * SW]);
      }
    }
  }
  if (!active) return;
  const int oh = oh0 + ty;
  if (oh >= OH) return;
#pragma unroll
  for (int r = 0; r < RB; ++r) {
    const int oc = __ldg(perm + blk * (RG * RB) + r * RG + rg);
    if (oc < 0) continue;
    const float sc = __ldg(oscale + oc), bs = __ldg(bias + oc);
#pragma unroll
    for (int p = 0; p < PX; ++p) {
      const int ow = ow0 + tx * PX + p;
      if (ow >= OW || (tx * PX + p) >= TW) continue;
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        if (n0 + b >= N) continue;
        const long long o = (((long long)(n0 + b) * K + oc) * OH + oh) * OW + ow;
        float v = fmaf(acc[r][p][b], sc, bs);
        if (res) v += load_act(res + o);
        if (relu) v = fmaxf(v, 0.f);
        y[o] = to_act(v);
      }
    }
  }
}
