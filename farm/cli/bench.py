"""`farm bench`: our sparse kernels against cuDNN on a model's layers, on this machine's GPU.

Weights are magnitude-pruned per layer to the asked sparsity (their values do not change a
kernel's time, their count and placement do); a job's own trained model is benchmarked by its
benchmark stage instead (`farm show JOB`).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from farm.cli import render
from farm.cli.render import Format, err
from farm.errors import InvalidSpec
from farm.models.names import is_model_file, split_ref

LAYER_COLUMNS = ["layer", "shape", "batch", "dtype", "sparsity", "config", "ours_ms", "cudnn_fp32_ms",
                 "cudnn_tf32_ms", "cudnn_tf32_cl_ms", "cudnn_fp16_ms", "cusparse_ms", "x_cudnn_fp32", "x_cudnn_tf32",
                 "x_cudnn_fp16", "floor_ms", "max_rel_err", "failed"]
# dense_*: the model as PyTorch runs it; dense_folded_*: the same with BN folded into the convs
# (every conv on cuDNN; bias, ReLU and add still separate kernels); dense_fused_*: the same with
# conv + bias (+ add) + ReLU as one cuDNN call where cuDNN has one (_cl_: channels_last);
# layer_timing: how the sparse model's layers were tuned and decided (cold past four L2s of
# activations a pass, farm.kernels.tuning)
MODEL_COLUMNS = ["batch", "dtype", "sparse_ms", "sparse_tf32_ms", "dense_fp32_ms", "dense_tf32_ms",
                 "dense_fp16_ms", "dense_folded_fp32_ms", "dense_folded_tf32_ms", "dense_folded_fp16_ms",
                 "dense_fused_fp32_ms", "dense_fused_tf32_ms", "dense_fused_cl_fp32_ms", "dense_fused_cl_tf32_ms",
                 "dense_fused_fp16_ms",
                 "sparse_layers", "dense_layers", "max_rel_err", "layer_timing", "cuda_graphs"]


class DType(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"


def _input(text: str, model: str) -> tuple[int, int, int]:
    """--input as (C, H, W), checked here so a bad one is one line before any GPU work (torch's
    word for an image too small for the model came after minutes of tuning)."""
    from farm.models.sizes import too_small_input
    from farm.scheduler.spec import canonical_model

    try:
        c, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InvalidSpec(f"--input must be CxHxW such as 3x224x224, got {text!r}") from None
    if min(c, h, w) < 1:
        raise InvalidSpec(f"--input must be positive sizes such as 3x224x224, got {text!r}")
    if not is_model_file(model) and (why := too_small_input(canonical_model(model), h, w, "--input is")):
        raise InvalidSpec(why)
    return c, h, w


def _batches(text: str) -> list[int]:
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise InvalidSpec(f"--batches must be batch sizes such as 1,32, got {text!r}")
    return sizes


def _pruned_model(name: str, sparsity: float, c: int, h: int, num_classes: int):
    from farm.compress import MagnitudePruning, prune_
    from farm.models import get_model
    from farm.models.names import canonical_model

    if is_model_file(name):
        model = _own_model(name, c, h, num_classes)
    else:
        options = {"small_input": h < 64} if canonical_model(name) in ("resnet18", "resnet50") else {}
        model = get_model(name, in_channels=c, num_classes=num_classes, **options)
    prune_(model, MagnitudePruning(sparsity=sparsity, schedule="oneshot", scope="layer"))
    return model.eval()


def _own_model(ref: str, c: int, h: int, num_classes: int):
    """A user's model file (FILE.py:NAME), built and tried on two inputs as `farm submit` does."""
    from farm.models.user import build_from_source, check_output

    file = Path(split_ref(ref)[0]).expanduser()
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidSpec(f"model file {file} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    model = build_from_source(source, ref, in_channels=c, num_classes=num_classes)
    check_output(model, in_channels=c, side=h, num_classes=num_classes, where=ref)
    return model


def bench(model: Annotated[str, typer.Argument(help="model: resnet50, resnet20, vgg16, ..., or your FILE.py:NAME",
                                               metavar="MODEL")] = "resnet50",
          sparsity: Annotated[float, typer.Option(help="fraction of each layer's weights pruned, in [0, 1)")] = 0.9,
          batches: Annotated[str, typer.Option(help="batch sizes, comma-separated")] = "1,32",
          dtype: Annotated[DType, typer.Option(help="activations: fp32 or fp16")] = DType.fp32,
          input: Annotated[str, typer.Option("--input", help="input CxHxW")] = "3x224x224",
          num_classes: Annotated[int, typer.Option(help="classifier outputs")] = 1000,
          whole_model: Annotated[bool, typer.Option(help="also time the whole model, sparse vs dense")] = True,
          fmt: Annotated[Format, typer.Option("--format", "-f", help="output: table, json, csv or markdown")] = Format.table):
    """Time our sparse kernels against cuDNN fp32 / TF32 / fp16 and cuSPARSE, layer by layer (GPU)."""
    from farm.scheduler.spec import canonical_model

    if not is_model_file(model):
        canonical_model(model)  # an unknown model is one line, on any machine
    elif not (file := Path(split_ref(model)[0]).expanduser()).is_file():
        raise InvalidSpec(f"model file {file} not found")
    if not 0.0 <= sparsity < 1.0:
        raise InvalidSpec(f"sparsity must be in [0, 1), got {sparsity}")
    c, h, w = _input(input, model)
    sizes = _batches(batches)
    import torch

    from farm.kernels import benchmark_layers, benchmark_model
    from farm.kernels.runtime import require_gpu

    require_gpu()  # one line on a machine without a GPU or PyCUDA, before any work
    net = _pruned_model(model, sparsity, c, h, num_classes)
    torch_dtype = torch.float16 if dtype == DType.fp16 else torch.float32
    with err.status(f"tuning and timing {model}'s sparse layers at batch {batches} ...") as status:
        def step(ev):  # tuning a layer can take seconds (csrgen compiles per layer): show the count
            status.update(f"tuning and timing {model}'s sparse layers: {ev['done']}/{ev['of']} done "
                          f"(last {ev['layer']}, batch {ev['batch']}) ...")

        layers = benchmark_layers(net, (1, c, h, w), sizes, dtype=torch_dtype, callback=step)
    render.rows(layers, fmt, columns=LAYER_COLUMNS, title=f"{model} at {sparsity:.0%}: per layer (ms)")
    if whole_model:
        with err.status("timing the whole model, CUDA graphs on both sides ...") as status:
            def decided(ev):  # each layer is decided sparse or dense again, against fp32 and TF32
                if "stage" in ev:
                    status.update(f"whole model, batch {ev['batch']}: layers decided against {ev['stage']} "
                                  f"{ev['done']}/{ev['of']} ...")

            whole = benchmark_model(net, (1, c, h, w), sizes, dtype=torch_dtype, callback=decided)
        render.rows(whole, fmt, columns=MODEL_COLUMNS, title=f"{model} at {sparsity:.0%}: whole model (ms)")
        for line in verdicts(whole):
            err.print(line, highlight=False)
        if any(row.get("cuda_graphs") is False for row in whole):
            err.print("note: the model syncs with the host in its forward, which no CUDA graph can hold: "
                      "both sides were timed eagerly, launches included", highlight=False)


def verdicts(rows: list[dict]) -> list[str]:
    """One line per batch and precision: the sparse model against the fastest dense one measured
    (the sparse model's activations are the row's dtype; its kept-dense layers run in `precision`
    for tf32)."""
    from farm.kernels.bench import fastest_dense

    out = []
    for r in rows:
        for precision, key in (("fp32", "sparse_ms"), ("tf32", "sparse_tf32_ms"), ("fp16", "sparse_ms")):
            best, sparse = fastest_dense(r, precision), r.get(key)
            if best and sparse:
                ratio = round(best[0] / sparse, 2)
                act = "" if r.get("dtype", "fp32") == "fp32" else f" ({r['dtype']} activations)"
                out.append(f"batch {r['batch']}, {precision}: sparse{act} {sparse:.3f} ms, fastest dense {best[0]:.3f} ms "
                           f"({best[1]}): {ratio:.2f}x" + ("" if ratio >= 1 else ", dense is faster"))
    return out
