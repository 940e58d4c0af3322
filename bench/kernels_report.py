"""Markdown tables for docs/BENCHMARKS.md from the JSON that kernels_layers.py / whole_model.py
wrote on the GPU machine.

    python bench/kernels_report.py DIR      # DIR holds layers.json and whole_model.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(v, nd=4):
    return "-" if v is None else f"{v:.{nd}f}"


def layer_table(rows, sparsity, variants) -> str:
    out = ["| layer | batch | weights | ours ms | config | cuDNN fp32 | TF32 | TF32 channels_last | fp16 | cuSPARSE+im2col "
           "| floor | x fp32 | x TF32 | x TF32 cl | x fp16 | rel err |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("target_sparsity") != sparsity or r.get("variant") not in variants:
            continue
        if "ours_ms" not in r:
            out.append(f"| {r['layer']} | {r['batch']} | {r.get('variant')} | FAILED: {r.get('failed')} |")
            continue
        out.append(
            f"| {r['layer']} | {r['batch']} | {r['variant']} | {fmt(r['ours_ms'])} | {r['config']} | "
            f"{fmt(r['cudnn_fp32_ms'])} | {fmt(r['cudnn_tf32_ms'])} | {fmt(r.get('cudnn_tf32_cl_ms'))} | "
            f"{fmt(r['cudnn_fp16_ms'])} | {fmt(r.get('cusparse_ms'))} | {fmt(r['floor_ms'])} | {r['x_cudnn_fp32']:.2f} | "
            f"{r['x_cudnn_tf32']:.2f} | {fmt(r.get('x_cudnn_tf32_cl'), 2)} | {r['x_cudnn_fp16']:.2f} | {r['max_rel_err']:.1e} |")
    return "\n".join(out)


def _best(r: dict, precision: str):
    """The fused dense baseline at its faster layout (NCHW or channels_last)."""
    times = [r.get(f"dense_fused_{precision}_ms"), r.get(f"dense_fused_cl_{precision}_ms")]
    return min((t for t in times if t is not None), default=None)


def model_table(rows) -> str:
    out = ["| batch | dense fp32 | dense TF32 | dense fp16 | BN folded: fp32 | TF32 | fp16 | cuDNN-fused (best layout): fp32 "
           "| TF32 | fp16 | sparse (rest fp32) | sparse (rest TF32) | sparse layers (fp32 / TF32 decision) | rel err |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['batch']} | {fmt(r['dense_fp32_ms'], 3)} | {fmt(r['dense_tf32_ms'], 3)} | "
                   f"{fmt(r['dense_fp16_ms'], 3)} | {fmt(r.get('dense_folded_fp32_ms'), 3)} | "
                   f"{fmt(r.get('dense_folded_tf32_ms'), 3)} | {fmt(r.get('dense_folded_fp16_ms'), 3)} | "
                   f"{fmt(_best(r, 'fp32'), 3)} | {fmt(_best(r, 'tf32'), 3)} | "
                   f"{fmt(r.get('dense_fused_fp16_ms'), 3)} | "
                   f"{fmt(r['sparse_ms'], 3)} | {fmt(r['sparse_tf32_ms'], 3)} | "
                   f"{r['sparse_layers']} / {r.get('sparse_layers_tf32', '-')} of {r['sparse_layers'] + r['dense_layers']} | "
                   f"{r['max_rel_err']:.1e} |")
    return "\n".join(out)


def main():
    d = Path(sys.argv[1])
    layers = json.loads((d / "layers.json").read_text())
    print("Environment:", json.dumps(layers["env"]), "\n")
    print("Ceilings:", json.dumps({k: round(v, 1) for k, v in layers["ceilings"].items()}), "\n")
    checks = layers.get("checks", [])
    print(f"Checks: {sum(c['ok'] for c in checks)}/{len(checks)} passed, worst rel err "
          f"{max((c.get('rel_err', 0) for c in checks), default=0):.1e}\n")
    for sp in (0.9, 0.95):
        print(f"### {int(sp * 100)}% sparsity\n")
        print(layer_table(layers["layers"], sp, ("fp32", "fp16", "int8", "cb4")), "\n")
    wm = d / "whole_model.json"
    if wm.exists():
        m = json.loads(wm.read_text())
        print("### ResNet-50, 90%\n")
        print(model_table(m["resnet50"]), "\n")
        print("Agreement:", json.dumps(m.get("agreement")))


if __name__ == "__main__":
    main()
