"""Which weights compression touches, and the per-layer report every stage returns.

A layer is a Conv2d or Linear weight, named by its state_dict key ("layer1.0.conv1.weight"):
masks, quantized tensors and the compressed file all use these keys.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

FIRST, CLASSIFIER = "first", "classifier"


def weight_layers(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every Conv2d/Linear weight in module order, by state_dict key."""
    return {f"{name}.weight" if name else "weight": m.weight for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def kept_dense(model: nn.Module, keep_dense: tuple[str, ...]) -> set[str]:
    """Resolve a keep-dense policy: "first" (the first layer), "classifier" (the last Linear),
    or names / glob patterns of state_dict keys ("layer1.*", "fc.weight")."""
    names = list(weight_layers(model))
    linears = [n for n in names if isinstance(model.get_submodule(n.rsplit(".", 1)[0]) if "." in n else model,
                                              nn.Linear)]
    kept: set[str] = set()
    for rule in keep_dense:
        if rule == FIRST and names:
            kept.add(names[0])
        elif rule == CLASSIFIER and linears:
            kept.add(linears[-1])
        else:
            kept.update(fnmatch.filter(names, rule) or fnmatch.filter(names, f"{rule}.weight"))
    return kept


def prunable(model: nn.Module, keep_dense: tuple[str, ...]) -> dict[str, nn.Parameter]:
    keep = kept_dense(model, keep_dense)
    return {n: p for n, p in weight_layers(model).items() if n not in keep}


def layer_rows(model: nn.Module, keep: set[str] | None = None) -> list[dict]:
    """Per-layer sparsity: {"name", "shape", "numel", "nonzeros", "sparsity", "dense_kept"}."""
    rows = []
    for name, w in weight_layers(model).items():
        nonzeros = int(torch.count_nonzero(w).item())
        rows.append({"name": name, "shape": list(w.shape), "numel": w.numel(), "nonzeros": nonzeros,
                     "sparsity": 1 - nonzeros / w.numel(), "dense_kept": bool(keep and name in keep)})
    return rows


def overall(rows: list[dict], *, prunable_only: bool) -> float:
    """Fraction of zeros over the layers' weights (only those not kept dense, if asked)."""
    chosen = [r for r in rows if not (prunable_only and r["dense_kept"])]
    numel = sum(r["numel"] for r in chosen)
    return 1 - sum(r["nonzeros"] for r in chosen) / numel if numel else 0.0
