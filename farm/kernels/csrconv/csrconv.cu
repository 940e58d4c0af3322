// Direct sparse convolution (no im2col) over a per-layer table built from CSR weights.
//
// Each thread owns RT output channels (a "row tile") x a PH x PW tile of output pixels, all in
// registers. For every input channel it loads the input patch its pixels need once, then walks the
// row tile's nonzeros of that channel. A nonzero is (case, weight) with case = (r*KH + kh)*KW + kw;
// the switch below turns the case into fully unrolled FMAs with compile-time register indices, so
// one loaded input value feeds every nonzero of the tile that touches it (reuse across output
// channels and across the pixel tile). The table is warp-uniform (a warp shares row tile and input
// channels), so the switch never diverges. Weights are decoded in-kernel from fp32, fp16, int8
// (linear, per-channel scale applied in the epilogue) or a codebook (8-bit or 4-bit codes).
// Split-K (S warps per pixel group, each a slice of input channels) gives small batches enough
// threads; the slices are summed in shared memory. Epilogue: per-channel scale (BatchNorm and the
// linear quantizer's scale), bias, residual add, ReLU.
//
// Python (farm/kernels/csrconv/config.py) prepends the #defines below; the defaults make this
// file compile on its own, which is what CI checks.

#ifndef RT
#define RT 2
#define KH 3
#define KW 3
#define SH 1
#define SW 1
#define DH 1
#define DW 1
#define PH 2
#define PW 1
#define ACT_HALF 0
#define WFMT 0
#define CSR_CASE_LIST(X) X(0,0,0,0) X(1,0,0,1) X(2,0,0,2) X(3,0,1,0) X(4,0,1,1) X(5,0,1,2) \
  X(6,0,2,0) X(7,0,2,1) X(8,0,2,2) X(9,1,0,0) X(10,1,0,1) X(11,1,0,2) X(12,1,1,0) X(13,1,1,1) \
  X(14,1,1,2) X(15,1,2,0) X(16,1,2,1) X(17,1,2,2)
#endif
#ifndef MAXTHREADS
#define MAXTHREADS 256
#endif
#ifndef SPLITK  // 1: S > 1 warps split the input channels (costs registers, so compiled apart)
#define SPLITK 1
#endif

#define XH ((PH - 1) * SH + (KH - 1) * DH + 1)
#define XW ((PW - 1) * SW + (KW - 1) * DW + 1)

#include "entries.cuh"
#define E_CASE(e) E_KEY(e)

typedef float acc_t[RT][PH][PW];
typedef float patch_t[XH][XW];

template <int R, int KH_, int KW_>
__device__ __forceinline__ void fma_tile(acc_t& acc, const patch_t& xv, float w) {
#pragma unroll
  for (int i = 0; i < PH; ++i)
#pragma unroll
    for (int j = 0; j < PW; ++j)
      acc[R][i][j] = fmaf(w, xv[i * SH + KH_ * DH][j * SW + KW_ * DW], acc[R][i][j]);
}

#define CSR_CASE(c, r, kh, kw) \
  case c: fma_tile<r, kh, kw>(acc, xv, w); break;

__device__ __forceinline__ void load_patch(patch_t& xv, const act_t* base, int W,
                                           const bool (&rok)[XH], const bool (&cok)[XW]) {
#pragma unroll
  for (int i = 0; i < XH; ++i)
#pragma unroll
    for (int j = 0; j < XW; ++j)
      xv[i][j] = (rok[i] && cok[j]) ? load_act(base + i * W + j) : 0.f;
}

extern "C" __global__ void __launch_bounds__(MAXTHREADS)
csrconv(const act_t* __restrict__ x, act_t* __restrict__ y, const act_t* __restrict__ res,
        const entry_t* __restrict__ tab, const int* __restrict__ cptr,
        const int* __restrict__ perm, const float* __restrict__ oscale,
        const float* __restrict__ bias, const float* __restrict__ codebook,
        int N, int C, int H, int W, int K, int OH, int OW, int padh, int padw,
        int TH, int TW, int S, int CC, int relu) {
  extern __shared__ float red[];
#if WFMT >= 3
  __shared__ float cb[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) cb[i] = codebook[i];
  __syncthreads();
#endif
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int WP = blockDim.x / (32 * S);
  const int s = warp / WP, wp = warp - s * WP;
  const int tile = (blockIdx.x * WP + wp) * 32 + lane;
  const int rt = blockIdx.y;
  const bool tile_ok = tile < N * TH * TW;
  int n = 0, oh0 = 0, ow0 = 0;
  if (tile_ok) {
    n = tile / (TH * TW);
    const int t = tile - n * TH * TW;
    oh0 = (t / TW) * PH;
    ow0 = (t - (t / TW) * TW) * PW;
  }
  const int ih0 = oh0 * SH - padh, iw0 = ow0 * SW - padw;
  bool rok[XH], cok[XW];
#pragma unroll
  for (int i = 0; i < XH; ++i) rok[i] = tile_ok && ih0 + i >= 0 && ih0 + i < H;
#pragma unroll
  for (int j = 0; j < XW; ++j) cok[j] = iw0 + j >= 0 && iw0 + j < W;

  acc_t acc;
#pragma unroll
  for (int r = 0; r < RT; ++r)
#pragma unroll
    for (int i = 0; i < PH; ++i)
#pragma unroll
      for (int j = 0; j < PW; ++j) acc[r][i][j] = 0.f;

  const int c_begin = min(C, s * CC), c_end = min(C, c_begin + CC);
  const long long plane = (long long)H * W;
  // Offset of the patch origin; out-of-image positions are never dereferenced (rok/cok).
  const act_t* xc = x + ((long long)n * C + c_begin) * plane + (long long)ih0 * W + iw0;
  const int* cp = cptr + (long long)rt * (C + 1);
  patch_t xv, xn;
  if (c_begin < c_end) load_patch(xv, xc, W, rok, cok);
  int e0 = __ldg(cp + c_begin);
  for (int c = c_begin; c < c_end; ++c) {
    const int e1 = __ldg(cp + c + 1);
    xc += plane;
    if (c + 1 < c_end) load_patch(xn, xc, W, rok, cok);  // prefetch the next channel's patch
    entry_t e = tab[e0];
    for (int i = e0; i < e1; ++i) {
      const entry_t en = tab[i + 1];  // the table carries one padding entry at its end
      const float w = E_W(e);
      switch (E_CASE(e)) {
        CSR_CASE_LIST(CSR_CASE)
        default: __builtin_unreachable();
      }
      e = en;
    }
#pragma unroll
    for (int i = 0; i < XH; ++i)
#pragma unroll
      for (int j = 0; j < XW; ++j) xv[i][j] = xn[i][j];
    e0 = e1;
  }

#if SPLITK
  if (S > 1) {  // split-K: slices 0..S-2 add into shared memory in turn, slice S-1 finishes
    const int slot = wp * 32 + lane, stride = WP * 32;
    for (int k = 0; k < S - 1; ++k) {
      if (s == k) {
#pragma unroll
        for (int r = 0; r < RT; ++r)
#pragma unroll
          for (int i = 0; i < PH; ++i)
#pragma unroll
            for (int j = 0; j < PW; ++j) {
              const int q = ((r * PH + i) * PW + j) * stride + slot;
              red[q] = (k == 0 ? 0.f : red[q]) + acc[r][i][j];
            }
      }
      __syncthreads();
    }
    if (s != S - 1) return;
#pragma unroll
    for (int r = 0; r < RT; ++r)
#pragma unroll
      for (int i = 0; i < PH; ++i)
#pragma unroll
        for (int j = 0; j < PW; ++j) acc[r][i][j] += red[((r * PH + i) * PW + j) * stride + slot];
  }
#endif
  if (!tile_ok) return;
#pragma unroll
  for (int r = 0; r < RT; ++r) {
    const int oc = __ldg(perm + rt * RT + r);
    if (oc < 0) continue;
    const float sc = __ldg(oscale + oc), b = __ldg(bias + oc);
#pragma unroll
    for (int i = 0; i < PH; ++i)
#pragma unroll
      for (int j = 0; j < PW; ++j) {
        const int oh = oh0 + i, ow = ow0 + j;
        if (oh < OH && ow < OW) {
          const long long o = (((long long)n * K + oc) * OH + oh) * OW + ow;
          float v = fmaf(acc[r][i][j], sc, b);
          if (res) v += load_act(res + o);
          if (relu) v = fmaxf(v, 0.f);
          y[o] = to_act(v);
        }
      }
  }
}
