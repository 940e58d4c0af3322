// Direct sparse convolution, input staged in shared memory, weights broadcast, no branches.
//
// A block owns RB output channels (a row group) x TPB tiles (TH x TW output pixels, one image
// each). It walks the input channels in chunks of CK: the chunk's input patches (zero outside the
// image) are staged in shared memory as fp32, and so are the row group's entries of the chunk;
// then for each of its RB rows (unrolled, so accumulators stay in registers) every thread walks
// the row's nonzeros in this chunk, four at a time (rows are padded to a multiple of four with
// zero weights) so that four loads are in flight before the FMAs. A nonzero is one entry:
// its offset in the staged patch (cin, kh, kw folded in) and its weight, the same for the whole
// block, so the weight is a broadcast and the loop has no data-dependent branch. Each thread owns
// P pixels of one output column (a vertical strip), so its P loads use immediate offsets and
// consecutive lanes read consecutive shared-memory words (no bank conflicts at stride 1).
// Weights decode in-kernel: fp32, fp16, int8 (linear: scale in the epilogue), codebook (8/4-bit).
// Epilogue: per-channel scale (folded BN, quantizer scale), bias, residual add, ReLU.

#ifndef RB
#define RB 4
#define TH 4
#define TW 14
#define P 2
#define KH 3
#define KW 3
#define SH 1
#define SW 1
#define DH 1
#define DW 1
#define ACT_HALF 0
#define WFMT 0
#endif
#ifndef TPB
#define TPB 1
#endif
#ifndef SB  // staged input values each thread loads before storing them
#define SB 8
#endif
#ifndef NTHREADS
#define NTHREADS 128
#endif

#define IH ((TH - 1) * SH + (KH - 1) * DH + 1)
#define IW ((TW - 1) * SW + (KW - 1) * DW + 1)
#define TY (TH / P)

#include "entries.cuh"
#define E_OFF(e) E_KEY(e)

extern "C" __global__ void __launch_bounds__(NTHREADS)
csrtile(const act_t* __restrict__ x, act_t* __restrict__ y, const act_t* __restrict__ res,
        const entry_t* __restrict__ tab, const int* __restrict__ cptr,
        const int* __restrict__ perm, const float* __restrict__ oscale,
        const float* __restrict__ bias, const float* __restrict__ codebook,
        int N, int C, int H, int W, int K, int OH, int OW, int padh, int padw,
        int TILES_H, int TILES_W, int CK, int NCHUNK, int relu) {
  // Dynamic shared memory: TPB*CK*IH*IW floats of input, then the chunk's entries.
  extern __shared__ float xs[];
  entry_t* es = reinterpret_cast<entry_t*>(xs + ((TPB * CK * IH * IW + 3) & ~3));  // 16-byte aligned
#if WFMT >= 3
  __shared__ float cb[256];
  for (int i = threadIdx.x; i < 256; i += NTHREADS) cb[i] = codebook[i];
#endif
  __shared__ int rows_at[RB + 1];
  const int tid = threadIdx.x, g = blockIdx.y;
  const int ntiles = N * TILES_H * TILES_W;
  // This thread's tile (sub-block b) and its column/strip inside the tile.
  const int b = tid / (TW * TY), t = tid - b * (TW * TY);
  const int ty = t / TW, tx = t - (t / TW) * TW;
  const int tile = blockIdx.x * TPB + b;
  const bool active = b < TPB && tile < ntiles;
  int n = 0, oh0 = 0, ow0 = 0;
  if (active) {
    n = tile / (TILES_H * TILES_W);
    const int t2 = tile - n * TILES_H * TILES_W;
    oh0 = (t2 / TILES_W) * TH;
    ow0 = (t2 - (t2 / TILES_W) * TILES_W) * TW;
  }
  const int base = active ? b * (CK * IH * IW) + (ty * P * SH) * IW + tx * SW : 0;

  float acc[RB][P];
#pragma unroll
  for (int r = 0; r < RB; ++r)
#pragma unroll
    for (int j = 0; j < P; ++j) acc[r][j] = 0.f;

  const long long plane = (long long)H * W;
  for (int ch = 0; ch < NCHUNK; ++ch) {
    const int c0 = ch * CK;
    const int cc_n = min(CK, C - c0);
    const int* cp = cptr + ((long long)g * NCHUNK + ch) * (RB + 1);
    const int e_begin = __ldg(cp), e_count = __ldg(cp + RB) - e_begin;
    __syncthreads();  // the previous chunk is no longer read
    // strided: a block of 4x4 tiles has 32 threads, one fewer than RB 32's RB + 1 bounds (a
    // plain `tid <= RB` left the last unset: wrong rows, and reads past the staged entries)
    for (int i = tid; i <= RB; i += NTHREADS) rows_at[i] = __ldg(cp + i) - e_begin;
    for (int i = tid; i < e_count; i += NTHREADS) es[i] = tab[e_begin + i];
    // Stage the input: SB independent loads per thread in flight before their stores (a
    // load-then-store loop keeps one load in flight and was the bound, see docs/BENCHMARKS.md).
    const int total = TPB * cc_n * IH * IW;
    for (int first = tid; first < total; first += NTHREADS * SB) {
      float v[SB];
      int dst[SB];
#pragma unroll
      for (int u = 0; u < SB; ++u) {
        const int idx = first + u * NTHREADS;
        v[u] = 0.f;
        dst[u] = -1;
        if (idx < total) {
          const int bb = idx / (cc_n * IH * IW);
          const int rem0 = idx - bb * (cc_n * IH * IW);
          const int cc = rem0 / (IH * IW);
          const int rem = rem0 - cc * (IH * IW);
          const int iy = rem / IW, ix = rem - (rem / IW) * IW;
          const int tl = blockIdx.x * TPB + bb;
          dst[u] = bb * (CK * IH * IW) + cc * (IH * IW) + rem;
          if (tl < ntiles) {
            const int nn = tl / (TILES_H * TILES_W);
            const int t2 = tl - nn * TILES_H * TILES_W;
            const int ih = (t2 / TILES_W) * TH * SH - padh + iy;
            const int iw = (t2 - (t2 / TILES_W) * TILES_W) * TW * SW - padw + ix;
            if (ih >= 0 && ih < H && iw >= 0 && iw < W)
              v[u] = load_act(x + ((long long)nn * C + c0 + cc) * plane + (long long)ih * W + iw);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < SB; ++u)
        if (dst[u] >= 0) xs[dst[u]] = v[u];
    }
    __syncthreads();
    const float* xb = xs + base;
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      const int i0 = rows_at[r], i1 = rows_at[r + 1];
      int i = i0;
      for (; i + 4 <= i1; i += 4) {
        const entry_t e0 = es[i], e1 = es[i + 1], e2 = es[i + 2], e3 = es[i + 3];
        const float* p0 = xb + E_OFF(e0);
        const float* p1 = xb + E_OFF(e1);
        const float* p2 = xb + E_OFF(e2);
        const float* p3 = xb + E_OFF(e3);
        const float w0 = E_W(e0), w1 = E_W(e1), w2 = E_W(e2), w3 = E_W(e3);
#pragma unroll
        for (int j = 0; j < P; ++j) {
          const float a = p0[j * SH * IW], bq = p1[j * SH * IW], c = p2[j * SH * IW], d = p3[j * SH * IW];
          acc[r][j] = fmaf(w3, d, fmaf(w2, c, fmaf(w1, bq, fmaf(w0, a, acc[r][j]))));
        }
      }
      for (; i < i1; ++i) {
        const entry_t e0 = es[i];
        const float* p0 = xb + E_OFF(e0);
        const float w0 = E_W(e0);
#pragma unroll
        for (int j = 0; j < P; ++j) acc[r][j] = fmaf(w0, p0[j * SH * IW], acc[r][j]);
      }
    }
  }
  if (!active) return;
  const int ow = ow0 + tx;
  if (ow >= OW) return;
#pragma unroll
  for (int r = 0; r < RB; ++r) {
    const int oc = __ldg(perm + g * RB + r);
    if (oc < 0) continue;
    const float sc = __ldg(oscale + oc), bs = __ldg(bias + oc);
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int oh = oh0 + ty * P + j;
      if (oh < OH) {
        const long long o = (((long long)n * K + oc) * OH + oh) * OW + ow;
        float v = fmaf(acc[r][j], sc, bs);
        if (res) v += load_act(res + o);
        if (relu) v = fmaxf(v, 0.f);
        y[o] = to_act(v);
      }
    }
  }
}
