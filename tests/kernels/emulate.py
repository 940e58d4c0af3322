"""A numpy model of csrtile.cu's indexing (block of TPB tiles, staged chunks, entry segments,
vertical strips, epilogue) for CPU tests: it reads the same table the GPU reads, so packing and
addressing bugs show up without a GPU."""

import numpy as np

from farm.kernels.csrconv.table import decode_values


def _out_hw(h, w, g, padding):
    return ((h + 2 * padding[0] - g.dh * (g.kh - 1) - 1) // g.sh + 1,
            (w + 2 * padding[1] - g.dw * (g.kw - 1) - 1) // g.sw + 1)


def run_csrtile(x, table, ck, cfg, g, shape, padding, bias, relu=False, res=None):
    n_, c, h, w = x.shape
    k = shape[0]
    pad_h, pad_w = padding
    oh, ow = _out_hw(h, w, g, padding)
    ih_, iw_ = cfg.patch(g)
    tiles_h, tiles_w = -(-oh // cfg.th), -(-ow // cfg.tw)
    ntiles = n_ * tiles_h * tiles_w
    nchunk = -(-c // ck)
    groups = len(table.perm) // cfg.rb
    off, val = decode_values(table)
    y = np.full((n_, k, oh, ow), np.nan)
    ty_n = cfg.th // cfg.p
    tid = np.arange(cfg.threads)
    b = tid // (cfg.tw * ty_n)
    t = tid % (cfg.tw * ty_n)
    ty, tx = t // cfg.tw, t % cfg.tw
    region = ck * ih_ * iw_
    for blk in range(-(-ntiles // cfg.tpb)):
        tiles = blk * cfg.tpb + b
        active = (b < cfg.tpb) & (tiles < ntiles)
        base = np.where(active, b * region + (ty * cfg.p * g.sh) * iw_ + tx * g.sw, 0)
        for grp in range(groups):
            acc = np.zeros((cfg.rb, len(tid), cfg.p))
            for ch in range(nchunk):
                xs = np.zeros(cfg.tpb * region)
                for bb in range(cfg.tpb):
                    tl = blk * cfg.tpb + bb
                    if tl >= ntiles:
                        continue
                    nn, t2 = divmod(tl, tiles_h * tiles_w)
                    ih0 = (t2 // tiles_w) * cfg.th * g.sh - pad_h
                    iw0 = (t2 % tiles_w) * cfg.tw * g.sw - pad_w
                    for cc in range(min(ck, c - ch * ck)):
                        for iy in range(ih_):
                            for ix in range(iw_):
                                hh, ww = ih0 + iy, iw0 + ix
                                if 0 <= hh < h and 0 <= ww < w:
                                    xs[bb * region + (cc * ih_ + iy) * iw_ + ix] = x[nn, ch * ck + cc, hh, ww]
                row = table.cptr[grp * nchunk + ch]
                for r in range(cfg.rb):
                    for i in range(row[r], row[r + 1]):
                        for j in range(cfg.p):
                            acc[r, :, j] += val[i] * xs[base + off[i] + j * g.sh * iw_]
            for r in range(cfg.rb):
                oc = table.perm[grp * cfg.rb + r]
                if oc < 0:
                    continue
                for q in np.nonzero(active)[0]:
                    nn, t2 = divmod(int(tiles[q]), tiles_h * tiles_w)
                    oh0, ow0 = (t2 // tiles_w) * cfg.th, (t2 % tiles_w) * cfg.tw
                    for j in range(cfg.p):
                        yy, xx = oh0 + ty[q] * cfg.p + j, ow0 + tx[q]
                        if yy < oh and xx < ow:
                            v = acc[r, q, j] * table.oscale[oc] + bias[oc]
                            if res is not None:
                                v += res[nn, oc, yy, xx]
                            y[nn, oc, yy, xx] = max(v, 0) if relu else v
    return y


def run_csrbatch(x, table, ck, cfg, g, shape, padding, bias, relu=False, res=None):
    """csrbatch.cu's indexing: blocks of (4 images, one tile, RG*RB rows), staged [cc][iy][ix][4],
    thread (row group, tile row, PX adjacent pixels); row r of group rg is the block's row r*RG+rg."""
    nb = 4
    n_, c, h, w = x.shape
    k = shape[0]
    pad_h, pad_w = padding
    oh, ow = _out_hw(h, w, g, padding)
    ih_, iw_ = cfg.patch(g)
    tiles_h, tiles_w = -(-oh // cfg.th), -(-ow // cfg.tw)
    nchunk = -(-c // ck)
    off, val = decode_values(table)
    y = np.full((n_, k, oh, ow), np.nan)
    txn = cfg.tw // cfg.px
    t = np.arange(cfg.group_threads)
    ty, tx = t // txn, t % txn
    active = ty < cfg.th
    base = np.where(active, (ty * g.sh) * iw_ + tx * cfg.px * g.sw, 0)
    for bx in range(-(-n_ // nb) * tiles_h * tiles_w):
        n0 = (bx // (tiles_h * tiles_w)) * nb
        t2 = bx % (tiles_h * tiles_w)
        oh0, ow0 = (t2 // tiles_w) * cfg.th, (t2 % tiles_w) * cfg.tw
        ih0, iw0 = oh0 * g.sh - pad_h, ow0 * g.sw - pad_w
        for blk in range(len(table.perm) // cfg.rows):
            acc = np.zeros((cfg.rg, cfg.rb, len(t), cfg.px, nb))
            for ch in range(nchunk):
                xs = np.zeros((ck * ih_ * iw_ + 1, nb))  # one spare vector: idle lanes may read past
                for cc in range(min(ck, c - ch * ck)):
                    for b in range(nb):
                        for iy in range(ih_):
                            for ix in range(iw_):
                                hh, ww = ih0 + iy, iw0 + ix
                                if n0 + b < n_ and 0 <= hh < h and 0 <= ww < w:
                                    xs[(cc * ih_ + iy) * iw_ + ix, b] = x[n0 + b, ch * ck + cc, hh, ww]
                row = table.cptr[blk * nchunk + ch]
                for rg in range(cfg.rg):
                    for r in range(cfg.rb):
                        for i in range(row[r * cfg.rg + rg], row[r * cfg.rg + rg + 1]):
                            for p in range(cfg.px):
                                acc[rg, r, :, p, :] += val[i] * xs[base + off[i] + p * g.sw]
            for rg in range(cfg.rg):
                for r in range(cfg.rb):
                    oc = table.perm[blk * cfg.rows + r * cfg.rg + rg]
                    if oc < 0:
                        continue
                    for q in np.nonzero(active)[0]:
                        for p in range(cfg.px):
                            yy, xx = oh0 + ty[q], ow0 + tx[q] * cfg.px + p
                            if yy >= oh or xx >= ow:
                                continue
                            for b in range(nb):
                                if n0 + b >= n_:
                                    continue
                                v = acc[rg, r, q, p, b] * table.oscale[oc] + bias[oc]
                                if res is not None:
                                    v += res[n0 + b, oc, yy, xx]
                                y[n0 + b, oc, yy, xx] = max(v, 0) if relu else v
    return y


def run_csrgather(x, table, cfg, shape_, bias, relu=False, res=None):
    """csrgather.cu per block: the plan's pixel table (origin, border mask, output index), equal
    entry slices per warp, entry key = offset << 5 | tap, then the epilogue. shape_: ConvShape."""
    from farm.kernels.csrgather.family import TAP_BITS, pixel_table

    k = shape_.k
    oh, ow = shape_.out_hw
    pix = pixel_table(shape_).astype(np.int64)
    npix = len(pix)
    flat = x.ravel()
    yflat = np.full(shape_.n * k * oh * ow, np.nan)
    resflat = None if res is None else res.ravel()
    key, val = _gather_values(table)
    rptr = table.cptr[0]
    for chunk in range(-(-npix // cfg.pixels)):
        q = chunk * cfg.pixels + np.arange(cfg.pixels)
        ok = q < npix
        d = pix[np.where(ok, q, 0)]
        base, mask, obase = d[:, 0], d[:, 1] & 0xFFFFFFFF, d[:, 2]
        mask = np.where(ok, mask, 0)
        for slot, slices in _gather_work(cfg, k):
            r0, length = rptr[slot], rptr[slot + 1] - rptr[slot]
            acc = np.zeros(cfg.pixels)
            for s in range(slices):  # the warps' slices, summed as the shared-memory reduction does
                for i in range(r0 + length * s // slices, r0 + length * (s + 1) // slices):
                    tap, off = key[i] & ((1 << TAP_BITS) - 1), key[i] >> TAP_BITS
                    hit = (mask >> tap) & 1 == 1
                    acc[hit] += val[i] * flat[base[hit] + off]
            oc = table.perm[slot]
            o = obase[ok] + oc * oh * ow
            v = acc[ok] * table.oscale[oc] + bias[oc] + (resflat[o] if resflat is not None else 0.0)
            yflat[o] = np.maximum(v, 0.0) if relu else v
    return yflat.reshape(shape_.n, k, oh, ow)


def _gather_work(cfg, k):
    """(row slot, slices) in the order a chunk's blocks and warps take them: split mode, every
    row in S slices; rows mode, block b warp s the slots b*S*R + s + S*r, whole."""
    if not cfg.r:
        return [(slot, cfg.s) for slot in range(k)]
    per_block = cfg.s * cfg.r
    slots = [b * per_block + s + cfg.s * r for b in range(-(-k // per_block))
             for s in range(cfg.s) for r in range(cfg.r)]
    slots = [slot for slot in slots if slot < k]
    assert sorted(slots) == list(range(k))  # every row once
    return [(slot, 1) for slot in slots]


def _gather_values(table):
    e = table.entries[:-1]
    key, word = e[:, 0].astype(np.int64), e[:, 1]
    if table.wfmt == "fp32":
        return key, word.view(np.float32).astype(np.float64)
    if table.wfmt == "fp16":
        return key, word.astype(np.uint16).view(np.float16).astype(np.float64)
    if table.wfmt == "int8":
        return key, word.view(np.int32).astype(np.float64)
    return key, table.codebook[word & 0xFF].astype(np.float64)
