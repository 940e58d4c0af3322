// Direct sparse convolution for small batches: lanes over output pixels, every load independent
// of the others.
//
// At batch 1 the other families are latency-bound: a thread walks the input channels one after
// another and each step waits on its own loads (csrconv), or a block waits on every staging
// (csrtile). Here a warp computes output channels (rows of the table) for a chunk of 32*P
// output pixels. A warp reads 32 entries with one coalesced load, decodes them once into shared
// memory and reads them back as broadcasts; entry t is (input offset << 5 | tap, weight), and
// lane L adds weight * x[base_L + offset] for each of its P pixels, where base_L is the pixel's
// input origin. The loads of a batch of entries do not depend on each other, so the loop keeps
// many in flight. A pixel near the border skips the taps that fall in the padding: bit `tap` of
// its 32-bit mask (so at most 32 taps: 1x1, 3x3, 5x5). Origins, masks and output indices come
// from a per-shape pixel table. The epilogue applies the per-channel scale (BatchNorm, int8
// scale), bias, residual add and ReLU.
//
// Two ways to give warps work:
// - csrgather: a block owns one output channel and S warps split its nonzeros into equal slices
//   (balanced whatever the row lengths), summed in shared memory.
// - csrgather_rows: a block owns S * R output channels of one pixel chunk, each warp R whole
//   rows. Every warp of the block reads the same input window, so after the first row the
//   loads hit in L1 instead of going to L2 once per output channel.
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
// Addresses are 32-bit byte offsets from x (the plan checks the input fits in 4 GB): one integer
// add per pixel and entry, and the load takes x as a uniform 64-bit base plus that offset, instead
// of 64-bit pointer arithmetic per load.
__device__ __forceinline__ float load_at(const act_t* x, unsigned byte) {
  return load_act(reinterpret_cast<const act_t*>(reinterpret_cast<const char*>(x) + byte));
}

template <bool MASKED>
__device__ __forceinline__ void gather_group(float (&acc)[P], const act_t* x, const unsigned (&px)[P],
                                             const unsigned (&mask)[P], const uint4* ent) {
  float v[G][P], w[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const uint4 d = ent[g];
    w[g] = __uint_as_float(d.z);
#pragma unroll
    for (int j = 0; j < P; ++j)
      v[g][j] = (!MASKED || (mask[j] & d.y)) ? load_at(x, px[j] + d.x) : 0.f;
  }
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int j = 0; j < P; ++j) acc[j] = fmaf(w[g], v[g][j], acc[j]);
}

// Entry i of the table decoded for the shared-memory slot: (input byte offset, tap bit, weight bits);
// past the slice end (i >= end) no tap bit and weight 0, so it adds nothing.
__device__ __forceinline__ uint4 fetch_entry(const uint2* __restrict__ tab, const float* cb, int i, int end) {
  if (i >= end) return make_uint4(0u, 0u, 0u, 0u);
  const uint2 t = __ldg(tab + i);
  return make_uint4((t.x >> TAP_BITS) * (unsigned)sizeof(act_t), 1u << (t.x & ((1u << TAP_BITS) - 1)),
                    __float_as_uint(decode(t.y, cb)), 0u);
}

// Programmatic dependent launch (sm_90+, see farm/kernels/pdl.py): let the next kernel on the
// stream start its own table reads now, and wait for the previous one's output before touching
// activations. Both are no-ops when the launch did not ask for it.
__device__ __forceinline__ void grid_dependency_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// A lane's P pixels: input origin, border mask, output index (-1 past the last pixel, whose
// origin 0 and full mask keep its loads inside x). Returns whether the whole warp is interior;
// the table orders interior pixels first, so most warps take the unmasked path.
__device__ __forceinline__ bool load_pixels(const int4* __restrict__ pix, int npix, unsigned full, int lane,
                                            unsigned (&px)[P], unsigned (&mask)[P], int (&obase)[P]) {
  bool interior = true;
#pragma unroll
  for (int j = 0; j < P; ++j) {
    const int q = (blockIdx.x * P + j) * 32 + lane;
    const int4 d = q < npix ? __ldg(pix + q) : make_int4(0, (int)full, -1, 0);
    px[j] = (unsigned)d.x * (unsigned)sizeof(act_t);  // byte offset of the window's origin
    mask[j] = (unsigned)d.y;
    obase[j] = d.z;
    interior = interior && mask[j] == full;
  }
  return __all_sync(0xffffffffu, interior);
}

// acc += table entries [a, b) times the lane's pixels. Entries go in batches of 32: lane i loads
// and decodes entry i once (offset, tap bit, weight) into the warp's slots in shared memory, then
// every lane reads each slot as a broadcast, so a pixel costs an address, a load and an FMA (and
// a bit test near the border). The loads go in groups of G issued before any is used: G * P
// loads per lane in flight at once. `next` holds the first batch (fetched by the caller, so it
// can be issued early); each batch fetches the one after while it computes.
__device__ __forceinline__ void slice_sum(float (&acc)[P], const act_t* x, const unsigned (&px)[P], const unsigned (&mask)[P],
                                          bool interior, const uint2* __restrict__ tab, const float* cb,
                                          int a, int b, uint4 next, uint4* slots, int lane) {
  for (int e = a; e < b; e += 32) {
    const int cnt = min(32, b - e);
    const uint4 mine = next;
    if (e + 32 < b) next = fetch_entry(tab, cb, e + 32 + lane, b);
    __syncwarp();  // the warp is done with the previous batch's slots
    slots[lane] = mine;
    __syncwarp();
    for (int t0 = 0; t0 < cnt; t0 += G) {  // G divides 32: t0 + g stays below 32
      if (interior)
        gather_group<false>(acc, x, px, mask, slots + t0);
      else
        gather_group<true>(acc, x, px, mask, slots + t0);
    }
  }
}

// The residual of one output channel at the lane's pixels (0 without one). Loaded before the
// sums, so its latency hides behind them.
__device__ __forceinline__ void load_residual(float (&r)[P], const act_t* __restrict__ res, const int (&obase)[P],
                                              int oc, int plane_out) {
#pragma unroll
  for (int j = 0; j < P; ++j)
    r[j] = res && obase[j] >= 0 ? load_act(res + obase[j] + (long long)oc * plane_out) : 0.f;
}

// scale (folded BatchNorm, int8 scale), bias, residual, ReLU; one output channel, P pixels.
__device__ __forceinline__ void store(act_t* __restrict__ y, const float (&acc)[P], const float (&r)[P],
                                      const int (&obase)[P], int oc, int plane_out, float sc, float bi, int relu) {
#pragma unroll
  for (int j = 0; j < P; ++j) {
    if (obase[j] < 0) continue;  // past the last pixel
    float v = fmaf(acc[j], sc, bi) + r[j];
    if (relu) v = fmaxf(v, 0.f);
    y[obase[j] + (long long)oc * plane_out] = to_act(v);
  }
}

// Every block first: the codebook into shared memory (codebook formats), then let the next
// kernel on the stream start (dependent launch).
__device__ __forceinline__ void block_start(float* cb, const float* __restrict__ codebook) {
#if WFMT >= 3
  for (int i = threadIdx.x; i < 256; i += blockDim.x) cb[i] = codebook[i];
  __syncthreads();
#endif
  grid_dependency_launch();
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
  block_start(cb, codebook);
  const int lane = threadIdx.x & 31, s = threadIdx.x >> 5;
  const int slot = blockIdx.y, oc = __ldg(perm + slot);
  unsigned px[P], mask[P];  // px: only read from where the pixel's mask allows
  int obase[P];
  const bool interior = load_pixels(pix, npix, full, lane, px, mask, obase);
  const float sc = __ldg(oscale + oc);
  const int r0 = __ldg(rptr + slot), len = __ldg(rptr + slot + 1) - r0;
  const int sh = __ffs(S) - 1;  // S is a power of two
  const int a = r0 + ((len * s) >> sh), b = r0 + ((len * (s + 1)) >> sh);
  const uint4 first = fetch_entry(tab, cb, a + lane, b);

  // Everything above reads only the layer's own tables. From here on the kernel reads the
  // previous kernel's output (x, res) and writes y, which that kernel may still be reading:
  // under programmatic dependent launch wait for it to complete (a no-op otherwise).
  grid_dependency_wait();
  const float bi = __ldg(bias + oc);  // the module's buffer, not the layer's table: after the wait
  float r[P], acc[P];
  load_residual(r, s == 0 ? res : nullptr, obase, oc, plane_out);  // warp 0 stores
#pragma unroll
  for (int j = 0; j < P; ++j) acc[j] = 0.f;
  slice_sum(acc, x, px, mask, interior, tab, cb, a, b, first, ent[s], lane);

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
  store(y, acc, r, obase, oc, plane_out, sc, bi, relu);
}

// Rows mode: block (chunk, group) computes row slots group*S*R + s + S*r (r < R) of the pixel
// chunk, warp s the slots s, s + S, ... (rows are sorted longest first, so the warps of a block
// get rows of about the same length). No reduction: each warp stores its own rows.
extern "C" __global__ void __launch_bounds__(256)
csrgather_rows(const act_t* __restrict__ x, act_t* __restrict__ y, const act_t* __restrict__ res,
               const uint2* __restrict__ tab, const int* __restrict__ rptr, const int* __restrict__ perm,
               const float* __restrict__ oscale, const float* __restrict__ bias,
               const float* __restrict__ codebook, const int4* __restrict__ pix, int npix, int plane_out,
               unsigned full, int S, int relu, int R, int K) {
  __shared__ float cb[256];
  __shared__ uint4 ent[8][32];
  block_start(cb, codebook);
  const int lane = threadIdx.x & 31, s = threadIdx.x >> 5;
  unsigned px[P], mask[P];
  int obase[P];
  const bool interior = load_pixels(pix, npix, full, lane, px, mask, obase);
  const int slot0 = blockIdx.y * S * R + s;
  uint4 first = make_uint4(0u, 0u, 0u, 0u);
  if (slot0 < K) first = fetch_entry(tab, cb, __ldg(rptr + slot0) + lane, __ldg(rptr + slot0 + 1));
  grid_dependency_wait();  // as in csrgather: activations only from here on

  for (int r = 0; r < R; ++r) {
    const int slot = slot0 + r * S;
    if (slot >= K) break;
    const int a = __ldg(rptr + slot), b = __ldg(rptr + slot + 1), oc = __ldg(perm + slot);
    if (r > 0) first = fetch_entry(tab, cb, a + lane, b);
    float rv[P], acc[P];
    load_residual(rv, res, obase, oc, plane_out);
#pragma unroll
    for (int j = 0; j < P; ++j) acc[j] = 0.f;
    slice_sum(acc, x, px, mask, interior, tab, cb, a, b, first, ent[s], lane);
    store(y, acc, rv, obase, oc, plane_out, __ldg(oscale + oc), __ldg(bias + oc), relu);
  }
}
