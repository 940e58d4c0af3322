"""A numpy model of csrtile.cu's indexing (staging, offsets, strips, epilogue) for CPU tests:
it reads the same table the GPU reads, so packing and addressing bugs show up without a GPU."""

import numpy as np

from farm.kernels.csrconv.table import decode_values


def run_csrtile(x, table, ck, cfg, g, shape, padding, bias, relu=False, res=None):
    n_, c, h, w = x.shape
    k = shape[0]
    pad_h, pad_w = padding
    oh = (h + 2 * pad_h - g.dh * (g.kh - 1) - 1) // g.sh + 1
    ow = (w + 2 * pad_w - g.dw * (g.kw - 1) - 1) // g.sw + 1
    ih_, iw_ = cfg.patch(g)
    tiles_h, tiles_w = -(-oh // cfg.th), -(-ow // cfg.tw)
    nchunk = table.cptr.shape[1] - 1
    off, val = decode_values(table)
    y = np.full((n_, k, oh, ow), np.nan)
    ty_n = cfg.th // cfg.p
    tx, ty = np.meshgrid(np.arange(cfg.tw), np.arange(ty_n))
    tx, ty = tx.ravel(), ty.ravel()
    base = (ty * cfg.p * g.sh) * iw_ + tx * g.sw
    for n in range(n_):
        for tile in range(tiles_h * tiles_w):
            oh0, ow0 = (tile // tiles_w) * cfg.th, (tile % tiles_w) * cfg.tw
            ih0, iw0 = oh0 * g.sh - pad_h, ow0 * g.sw - pad_w
            for grp in range(table.cptr.shape[0] // cfg.rb):
                acc = np.zeros((cfg.rb, len(base), cfg.p))
                for ch in range(nchunk):
                    xs = np.zeros(ck * ih_ * iw_ + ih_ * iw_ * 2)
                    for cc in range(min(ck, c - ch * ck)):
                        for iy in range(ih_):
                            for ix in range(iw_):
                                hh, ww = ih0 + iy, iw0 + ix
                                if 0 <= hh < h and 0 <= ww < w:
                                    xs[(cc * ih_ + iy) * iw_ + ix] = x[n, ch * ck + cc, hh, ww]
                    for r in range(cfg.rb):
                        slot = grp * cfg.rb + r
                        for i in range(table.cptr[slot, ch], table.cptr[slot, ch + 1]):
                            for j in range(cfg.p):
                                acc[r, :, j] += val[i] * xs[base + off[i] + j * g.sh * iw_]
                for r in range(cfg.rb):
                    oc = table.perm[grp * cfg.rb + r]
                    if oc < 0:
                        continue
                    for t in range(len(base)):
                        for j in range(cfg.p):
                            yy, xx = oh0 + ty[t] * cfg.p + j, ow0 + tx[t]
                            if yy < oh and xx < ow:
                                v = acc[r, t, j] * table.oscale[oc] + bias[oc]
                                if res is not None:
                                    v += res[n, oc, yy, xx]
                                y[n, oc, yy, xx] = max(v, 0) if relu else v
    return y
