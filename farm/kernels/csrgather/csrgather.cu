// Direct sparse convolution for small batches: one output channel per block, lanes over pixels,
// every load independent of the others.
//
// At batch 1 the other families are latency-bound: a thread walks the input channels one after
// another and each step waits on its own loads (csrconv), or a block waits on every staging
// (csrtile). Here a block owns one output channel (a row of the table) and a chunk of 32*P
// output pixels, and S warps split the row's nonzeros into equal slices (balanced whatever the
// row lengths). A warp reads 32 entries with one coalesced load, decodes them once into shared
// memory and reads them back as broadcasts; entry t is (input offset << 5 | tap, weight), and
// lane L adds weight * x[base_L + offset] for each of its P pixels, where base_L is the
// pixel's input origin. The 32 loads of a
// batch of entries do not depend on each other, so the loop keeps many in flight. A pixel near
// the border skips the taps that fall in the padding: bit `tap` of its 32-bit mask (so at most
// 32 taps: 1x1, 3x3, 5x5). Origins, masks and output indices come from a per-shape pixel table. The slices are summed in shared memory; the epilogue applies the
// per-channel scale (BatchNorm, int8 scale), bias, residual add and ReLU.
//
// Python (farm/kernels/csrgather/family.py) prepends the #defines below; the defaults make this
// file compile on its own, which is what CI checks.

#ifndef P
#define P 2
#define ACT_HALF 0
#define WFMT 0
#endif

#include "act.cuh"

// The weight word of an entry: fp32 bits, fp16 bits, a signed int8 (scale in the epilogue) or
// a codebook index (cb: the codebook in shared memory).
__device__ __forceinline__ float decode(unsigned v, const float* cb) {
#if WFMT == 0
  return __uint_as_float(v);
#elif WFMT == 1
  return __half2float(__ushort_as_half((unsigned short)v));
#elif WFMT == 2
  return (float)(int)v;
#else
  return cb[v & 0xffu];
#endif
}

#ifndef G
#define G 8  // entries whose loads are issued together
#endif
#define TAP_BITS 5

// G entries (decoded, in shared memory) times P pixels: the G*P loads first, then the FMAs.
// MASKED: test each pixel's border mask; a warp whose pixels are all interior skips the tests.
template <bool MASKED>
__device__ __forceinline__ void gather_group(float (&acc)[P], const act_t* const (&px)[P],
                                             const unsigned (&mask)[P], const uint4* ent) {
  float v[G][P], w[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const uint4 d = ent[g];
    w[g] = __uint_as_float(d.z);
#pragma unroll
    for (int j = 0; j < P; ++j)
      v[g][j] = (!MASKED || (mask[j] & d.y)) ? load_act(px[j] + (int)d.x) : 0.f;
  }
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int j = 0; j < P; ++j) acc[j] = fmaf(w[g], v[g][j], acc[j]);
}

extern "C" __global__ void __launch_bounds__(256)
csrgather(const act_t* __restrict__ x, act_t* __restrict__ y, const act_t* __restrict__ res,
          const uint2* __restrict__ tab, const int* __restrict__ rptr, const int* __restrict__ perm,
          const float* __restrict__ oscale, const float* __restrict__ bias,
          const float* __restrict__ codebook, const int4* __restrict__ pix, int npix, int plane_out,
          unsigned full, int S, int relu) {
  extern __shared__ float red[];  // (S - 1) x P x 32 partial sums
  __shared__ float cb[256];
  __shared__ uint4 ent[8][32];  // per warp: its current batch of decoded entries
#if WFMT >= 3
  for (int i = threadIdx.x; i < 256; i += blockDim.x) cb[i] = codebook[i];
  __syncthreads();
#endif
  const int lane = threadIdx.x & 31, s = threadIdx.x >> 5;
  const int slot = blockIdx.y, oc = __ldg(perm + slot);

  // Each pixel's input origin, border mask and output index come from the plan's pixel table
  // (built once per input shape): no divisions or bounds tests here.
  const act_t* px[P];  // only dereferenced where the pixel's mask allows
  unsigned mask[P];
  int obase[P];
  float acc[P];
#pragma unroll
  for (int j = 0; j < P; ++j) {
    const int q = (blockIdx.x * P + j) * 32 + lane;
    // Past the last pixel: origin 0 with every tap "inside" (loads stay in x), no output.
    const int4 d = q < npix ? __ldg(pix + q) : make_int4(0, (int)full, -1, 0);
    px[j] = x + d.x;
    mask[j] = (unsigned)d.y;
    obase[j] = d.z;
    acc[j] = 0.f;
  }
  // The epilogue's inputs load now, off the critical path (a block is a short chain of loads).
  const float sc = __ldg(oscale + oc), bi = __ldg(bias + oc);
  float r[P];
#pragma unroll
  for (int j = 0; j < P; ++j)
    r[j] = res && s == 0 && obase[j] >= 0 ? load_act(res + obase[j] + (long long)oc * plane_out) : 0.f;
  // The table orders interior pixels first, so most warps take the unmasked path.
  bool interior = true;
#pragma unroll
  for (int j = 0; j < P; ++j) interior = interior && mask[j] == full;
  interior = __all_sync(0xffffffffu, interior);
  const int r0 = __ldg(rptr + slot), len = __ldg(rptr + slot + 1) - r0;
  const int sh = __ffs(S) - 1;  // S is a power of two
  const int a = r0 + ((len * s) >> sh), b = r0 + ((len * (s + 1)) >> sh);

  // Entries go in batches of 32: lane i loads and decodes entry i once (offset, tap bit, weight)
  // into the warp's slots in shared memory, then every lane reads each slot as a broadcast, so
  // a pixel costs an address, a load and an FMA (and a bit test near the border). The loads go
  // in groups of G issued before any is used: G * P loads per lane in flight at once.
  for (int e = a; e < b; e += 32) {
    const int cnt = min(32, b - e);
    uint4 mine = make_uint4(0u, 0u, 0u, 0u);  // past cnt: no tap bit, weight 0
    if (lane < cnt) {
      const uint2 t = __ldg(tab + e + lane);
      mine = make_uint4(t.x >> TAP_BITS, 1u << (t.x & ((1u << TAP_BITS) - 1)),
                        __float_as_uint(decode(t.y, cb)), 0u);
    }
    __syncwarp();  // the warp is done with the previous batch's slots
    ent[s][lane] = mine;
    __syncwarp();
    for (int t0 = 0; t0 < cnt; t0 += G) {  // G divides 32: t0 + g stays below 32
      if (interior)
        gather_group<false>(acc, px, mask, ent[s] + t0);
      else
        gather_group<true>(acc, px, mask, ent[s] + t0);
    }
  }

  if (S > 1) {  // warps 1..S-1 leave their sums in shared memory, warp 0 adds them up
    if (s > 0) {
#pragma unroll
      for (int j = 0; j < P; ++j) red[((s - 1) * P + j) * 32 + lane] = acc[j];
    }
    __syncthreads();
    if (s > 0) return;
    for (int k = 0; k < S - 1; ++k)
#pragma unroll
      for (int j = 0; j < P; ++j) acc[j] += red[(k * P + j) * 32 + lane];
  }

#pragma unroll
  for (int j = 0; j < P; ++j) {
    if (obase[j] < 0) continue;  // past the last pixel
    float v = fmaf(acc[j], sc, bi) + r[j];
    if (relu) v = fmaxf(v, 0.f);
    y[obase[j] + (long long)oc * plane_out] = to_act(v);
  }
}
