"""JobSpec: what one job computes, as plain validated data with a canonical JSON form and hash.

Two specs that would compute the same thing have the same canonical JSON and so the same
sha256; the database keeps that hash UNIQUE, which is how a repeated submit finds its job.
`resolve()` fills every default from the recipe, so the hash never depends on defaults
changing underneath it; `run` (bumped by --force) is the only way to ask for the same work twice.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any

from farm.errors import InvalidSpec, UnknownDataset, UnknownModel
# a dataset of the user's images (folder:/path) and the size they are scaled to unless told;
# the module imports no torch, so specs stay cheap to check
from farm.models.folder import DEFAULT_IMAGE_SIZE, PREFIX as FOLDER

SPEC_VERSION = 1  # bump when the meaning of a field changes: old hashes then stop matching
# Fields that are no option of `farm submit`: the pipeline's stages (a prefix, or the benchmark's
# and tests' noop/stall), the repeat number --force picks and the format's version. A stored spec
# carries them, so from_dict takes them, but an error's list of known fields does not offer them.
INTERNAL_FIELDS = ("stages", "run", "version")

PIPELINE = ("train", "prune", "quantize", "benchmark")
NOOP = ("noop",)  # the queue-overhead benchmark's job: the whole farm path, no work
STALL = ("stall",)  # tests: holds its process `epochs` seconds, deaf to signals (native code)
METHODS = ("gradual", "oneshot")  # pruning schedule
SCOPES = ("global", "layer", "lamp")
SCHEMES = ("fp32", "fp16", "linear", "log", "kmeans")
FLOAT_BITS = {"fp32": 32, "fp16": 16}
QUANT_BITS = range(2, 9)  # linear, log and kmeans codes of 2..8 bits
DEVICES = ("gpu", "cpu")
MAX_IMAGE_SIZE = 1024  # beyond this a dataset held whole does not fit: one image is 12 MiB as float32
# Fields of a user's own inputs (farm.scheduler.inputs): in the canonical form and the stage keys
# only where set, so the hashes of jobs without them stay as they were.
INPUT_FIELDS = ("model_file", "checkpoint", "data_hash", "image_size", "normalise")
# A folder's images are normalised by its own training images' mean and std unless told how
# the user's model was trained: "none" (pixels in 0..1, a bare ToTensor), "imagenet", or
# "MEAN/STD" with one value or one a channel each ("0.5,0.5,0.5/0.25,0.25,0.25").
NORMALISE_NAMED = {"none": ((0.0,), (1.0,)), "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
GUARDED_TRIALS = 3  # retrainings a guarded (--max-drop) prune may run
GUARDED_SEARCH_VERSION = 2  # bumped when farm.compress.guarded_prune's rules change (2: global split, density back-off)


@dataclass(frozen=True)
class Recipe:
    """Epochs and data per stage. `full` is the real recipe; `quick` keeps a CPU run to minutes."""

    epochs: int  # dense training
    retrain_epochs: int  # prune + retrain
    finetune_epochs: int  # quantize + fine-tune
    subset: int | None  # first n train (and test) examples; None: the whole dataset
    batch_size: int
    distill: float = 0.0  # retraining learns this much from the model before pruning/quantizing
    # Random translation (pixels) while retraining a pruned model; dense training keeps 2. A
    # pruned ResNet-20 fits Fashion-MNIST less well than the dense one, and 1 instead of 2
    # measured 0.17 points better at 90% and 0.25 at 98%, paired on six seeds each
    # (docs/RESULTS.md, runs 29-33). Part of the prune stage's key: artifacts retrained with
    # 2 px (before this field) are not reused for it.
    retrain_crop: int = 1
    # A gradual prune to more than this goes through STEP_LEVELS below the target, each level
    # pruned from the one before with retraining (farm.compress.prune_in_steps). Straight from
    # dense, the `full` recipe's 60 epochs reached 95% 0.12 points below dense but 98% 1.18 below
    # (six seeds); through 90 -> 95 -> 98% with 60 / 50 / 70 epochs, 98% ended 0.87 below (seven
    # seeds; docs/RESULTS.md, run 37). Part of the prune stage's key where it applies.
    step_above: float = 0.95


# The levels of a stepped prune, and each step's retraining as a multiple of retrain_epochs:
# the chain measured in docs/RESULTS.md (60 / 50 / 70 epochs to 90 / 95 / 98%).
STEP_LEVELS = (0.9, 0.95, 0.98)
STEP_GAP = 0.01  # a level this close below the target is skipped: a step that prunes almost nothing


def _step_epochs(level: float, epochs: int) -> int:
    factor = 1.0 if level <= 0.9 else 5 / 6 if level <= 0.95 else 7 / 6
    return math.floor(epochs * factor + 0.5)  # halves up (round() would make 3 * 5/6 two)


# `full` is what measured best on an H200 (docs/RESULTS.md): with CUDA-graphed steps an epoch
# of ResNet-20 on Fashion-MNIST takes ~0.5 s, so a job is about a minute of training.
# Distillation (a recipe's `distill`) measured no better than run-to-run noise: off.
RECIPES = {
    "full": Recipe(epochs=40, retrain_epochs=60, finetune_epochs=6, subset=None, batch_size=512),
    "quick": Recipe(epochs=2, retrain_epochs=2, finetune_epochs=1, subset=4000, batch_size=64),
}


@dataclass(frozen=True)
class JobSpec:
    model: str = "resnet"
    dataset: str = "fashion-mnist"
    sparsity: float = 0.9  # fraction of prunable weights set to zero, in [0, 1)
    method: str = "gradual"  # pruning schedule: gradual | oneshot
    scope: str = "global"  # magnitude threshold over all layers, per layer, or over LAMP scores
    max_drop: float | None = None  # accuracy-guarded pruning: at most this many points below dense
    scheme: str = "fp32"  # weight storage: fp32 | fp16 (no quantization) | linear | log | kmeans
    bits: int | None = None  # 32 for fp32, 16 for fp16, 2..8 for quantized schemes
    recipe: str = "full"  # full | quick; fills the fields below that are None
    epochs: int | None = None
    retrain_epochs: int | None = None
    finetune_epochs: int | None = None
    subset: int | None = None
    batch_size: int | None = None
    batches: tuple[int, ...] = (1, 8, 32, 128)  # batch sizes to benchmark
    seed: int = 0
    device: str = "gpu"  # which worker queue: gpu | cpu
    # A user's own inputs, each as its content sha256 once submitted (farm.scheduler.inputs):
    model_file: str | None = None  # the model's source; `model` is then "net.py:build"
    checkpoint: str | None = None  # trained weights the dense stage starts from (a path until submitted)
    data_hash: str | None = None  # a folder dataset's fingerprint (its files' paths and sizes)
    image_size: int | None = None  # a folder dataset's images are scaled to this many pixels a side
    normalise: str | None = None  # a folder's normalisation: None (its own statistics), none, imagenet, MEAN/STD
    stages: tuple[str, ...] = PIPELINE  # a prefix of the pipeline, ("noop",) or ("stall",)
    run: int = 0  # repeat number; --force takes the next free one
    version: int = SPEC_VERSION

    def __post_init__(self):
        # Lists from JSON/YAML become tuples, so specs stay hashable and compare equal.
        # A scalar (`batches: 32`, or the string `1,32`) is one value, not something to iterate.
        scalar = isinstance(self.batches, (int, str))
        object.__setattr__(self, "batches", (self.batches,) if scalar else tuple(self.batches))
        object.__setattr__(self, "stages", tuple(self.stages))

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, resolve: bool = True) -> JobSpec:
        """From stored or typed fields; resolve=False leaves a user's files unread (for ingest)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            offered = sorted(known - set(INTERNAL_FIELDS) - {"model_file", "data_hash"})
            raise InvalidSpec(f"unknown job field(s) {', '.join(unknown)}; known: {', '.join(offered)}")
        spec = cls(**data)
        return spec.resolve() if resolve else spec

    def resolve(self) -> JobSpec:
        """Validated, with names canonical and every default filled in: the form that is hashed."""
        _check_types(self)
        _check_inputs(self)
        model = self.model if self.model_file else canonical_model(self.model)
        dataset = self.dataset if self.data_hash else canonical_dataset(self.dataset)
        image_size = _check_image_size(model, dataset, self.image_size, own_model=bool(self.model_file))
        if not 0.0 <= self.sparsity < 1.0:
            raise InvalidSpec(f"sparsity must be in [0, 1), got {self.sparsity}")
        _check_choice("method", self.method, METHODS)
        _check_choice("scope", self.scope, SCOPES)
        _check_choice("scheme", self.scheme, SCHEMES)
        _check_choice("recipe", self.recipe, tuple(RECIPES))
        _check_choice("device", self.device, DEVICES)
        _check_max_drop(self)
        bits = _check_bits(self.scheme, self.bits)
        recipe = RECIPES[self.recipe]
        filled = {name: getattr(recipe, name) if getattr(self, name) is None else getattr(self, name)
                  for name in ("epochs", "retrain_epochs", "finetune_epochs", "subset", "batch_size")}
        if self.checkpoint and self.epochs is None:  # trained already: the dense stage measures it
            filled["epochs"] = 0
        for name in ("epochs", "retrain_epochs", "finetune_epochs"):
            if filled[name] < 0:
                raise InvalidSpec(f"{name} must be >= 0, got {filled[name]}")
        if filled["subset"] is not None and filled["subset"] < 1:
            raise InvalidSpec(f"subset must be a positive number of examples, got {filled['subset']}")
        if filled["batch_size"] < 1:
            raise InvalidSpec(f"batch_size must be >= 1, got {filled['batch_size']}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise InvalidSpec(f"batches must be positive batch sizes, got {list(self.batches)}")
        _check_stages(self.stages)
        if self.run < 0 or self.seed < 0:
            raise InvalidSpec("run and seed must be >= 0")
        if self.version != SPEC_VERSION:
            raise InvalidSpec(f"job spec version {self.version} is not {SPEC_VERSION}")
        max_drop = None if self.max_drop is None else float(self.max_drop)
        normalise = None if self.normalise is None else _canonical_normalise(self.normalise)
        return replace(self, model=model, dataset=dataset, sparsity=float(self.sparsity), bits=bits, max_drop=max_drop,
                       batches=tuple(sorted(set(self.batches))), image_size=image_size, normalise=normalise,
                       **filled)

    # --- identity ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}  # flat: no asdict deep copy
        d["batches"], d["stages"] = list(self.batches), list(self.stages)
        for name in ("max_drop", *INPUT_FIELDS):  # only where set: hashes of specs from before them stay
            if d[name] is None:
                del d[name]
        return d

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @cached_property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def label(self) -> str:
        """Short human name: resnet20/fashion-mnist s=0.90 kmeans4; a scope other than global, a
        one-shot prune and a --force run say so (two jobs alike but for those read as one twice)."""
        quant = self.scheme if self.scheme in FLOAT_BITS else f"{self.scheme}{self.bits}"
        guard = "" if self.max_drop is None else f" (drop <= {self.max_drop:g} pt)"
        extra = "".join([f" {self.scope}" if self.scope != "global" else "",
                         " oneshot" if self.method == "oneshot" else "", f" run {self.run}" if self.run else ""])
        return f"{self.model}/{self.dataset} s={self.sparsity:.2f}{guard} {quant}{extra}"

    @property
    def distill(self) -> float:
        """The recipe's distillation weight for retraining and fine-tuning."""
        return RECIPES[self.recipe].distill

    @property
    def retrain_crop(self) -> int:
        """The recipe's random translation, in pixels, while retraining a pruned model."""
        return RECIPES[self.recipe].retrain_crop

    @property
    def prune_steps(self) -> tuple[tuple[float, int], ...]:
        """(sparsity, retraining epochs) of each step of the prune stage: one step, the target
        with retrain_epochs, unless the recipe steps a gradual prune to this sparsity (above)."""
        if self.method != "gradual" or self.max_drop is not None or self.sparsity <= RECIPES[self.recipe].step_above:
            return ((self.sparsity, self.retrain_epochs),)
        levels = [lv for lv in STEP_LEVELS if lv <= self.sparsity - STEP_GAP + 1e-9] + [self.sparsity]  # 1e-9: float
        return tuple((lv, _step_epochs(lv, self.retrain_epochs)) for lv in levels)

    # --- per-stage identity (what a stage's artifact depends on) ------------------------------

    def stage_key(self, stage: str, steps: tuple[tuple[float, int], ...] | None = None) -> str:
        """sha256 of everything `stage` and the stages before it read: equal keys, same artifact.
        The dense baseline's key ignores sparsity, scheme and benchmark settings, so a sparsity
        sweep trains it once. `steps` (prune), a prefix of prune_steps: the key of the model
        after those first steps, which other jobs share: the first step of a 98% job is a 90%
        job's whole prune, and a 99% job's first three are a 98% job's."""
        parts: dict[str, Any] = {"version": SPEC_VERSION, "model": self.model, "dataset": self.dataset,
                                 "seed": self.seed, "subset": self.subset, "batch_size": self.batch_size,
                                 "epochs": self.epochs}
        parts |= {name: getattr(self, name) for name in INPUT_FIELDS if getattr(self, name) is not None}
        if stage in ("prune", "quantize"):
            steps = tuple(steps or self.prune_steps)
            # one step is keyed as a one-level job to its sparsity with its epochs
            parts |= {"sparsity": steps[-1][0], "method": self.method, "scope": self.scope,
                      "retrain_epochs": self.retrain_epochs if len(steps) > 1 else steps[0][1],
                      "retrain_crop": self.retrain_crop}
            if self.distill:  # only where set: keys of recipes without distillation stay as they were
                parts["distill"] = self.distill
            if len(steps) > 1:  # only where stepped: one-step keys stay as they were
                parts["steps"] = steps
            if self.max_drop is not None:  # the search's rules are part of what it produces
                parts |= {"max_drop": self.max_drop, "search": GUARDED_SEARCH_VERSION}
        if stage == "quantize":
            parts |= {"scheme": self.scheme, "bits": self.bits, "finetune_epochs": self.finetune_epochs}
        blob = json.dumps({"stage": stage, **parts}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


# --- checks -----------------------------------------------------------------------------------

_OPTIONAL_STRS = ("model_file", "checkpoint", "data_hash", "normalise")
_TYPES = {"model": str, "dataset": str, "sparsity": (int, float), "method": str, "scope": str,
          "scheme": str, "bits": (int, type(None)), "recipe": str, "seed": int, "device": str,
          "run": int, "version": int}
_OPTIONAL_INTS = ("epochs", "retrain_epochs", "finetune_epochs", "subset", "batch_size", "image_size")


def _check_types(spec: JobSpec) -> None:
    for name, kind in _TYPES.items():
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise InvalidSpec(f"{name} has the wrong type: {value!r}")
    for name in _OPTIONAL_INTS:
        value = getattr(spec, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidSpec(f"{name} must be a whole number, got {value!r}")
    for name in _OPTIONAL_STRS:
        value = getattr(spec, name)
        if value is not None and not isinstance(value, str):
            what = "auto, none, imagenet or MEAN/STD as text" if name == "normalise" else "a file's path"
            raise InvalidSpec(f"{name} must be {what}, got {value!r}")
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in spec.batches):
        raise InvalidSpec(f"batches must be whole numbers, e.g. [1, 32], got {list(spec.batches)}")


def _check_inputs(spec: JobSpec) -> None:
    """A user's files must have been read (farm.scheduler.inputs.ingest, which `farm submit`,
    `farm sweep` and submission.submit call): a spec names them by content hash from then on."""
    from farm.models.names import is_model_file

    if is_model_file(spec.model) != (spec.model_file is not None):
        raise InvalidSpec(f"model {spec.model!r}: a model file is read at submit "
                          f"(farm.scheduler.inputs.ingest); the stored spec has no copy of it")
    if spec.checkpoint is not None and not _is_sha256(spec.checkpoint):
        raise InvalidSpec(f"checkpoint {spec.checkpoint!r} was not read: submit it through farm submit "
                          f"or farm.scheduler.inputs.ingest")
    folder = spec.dataset.lower().startswith(FOLDER)
    if folder != (spec.data_hash is not None):
        raise InvalidSpec(f"dataset {spec.dataset!r}: an image folder is listed at submit "
                          f"(farm.scheduler.inputs.ingest)")
    if spec.image_size is not None and not folder:
        raise InvalidSpec(f"image_size scales a folder of images (dataset folder:PATH); {spec.dataset}'s "
                          f"images have their own size")
    if spec.normalise is not None and spec.normalise.strip().lower() != "auto" and not folder:
        raise InvalidSpec(f"normalise sets how a folder of images (dataset folder:PATH) is normalised; "
                          f"{spec.dataset} is normalised as usual for it")


def normalise_values(text: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) per channel (or one for all) in 0..1 units, from a spec's normalise; None: the
    folder's own statistics."""
    key = None if text is None else text.strip().lower()
    if key in (None, "auto"):
        return None
    if key in NORMALISE_NAMED:
        return NORMALISE_NAMED[key]
    try:
        mean, std = (tuple(float(v) for v in part.split(",")) for part in key.split("/"))
    except ValueError:
        raise InvalidSpec(f"normalise takes auto, none, imagenet or MEAN/STD (one value, or one a channel: "
                          f"0.485,0.456,0.406/0.229,0.224,0.225), got {text!r}") from None
    if len(mean) != len(std) or not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise InvalidSpec(f"normalise {text!r}: as many means as stds, finite, every std above 0")
    return mean, std


def _canonical_normalise(text: str) -> str | None:
    """One spelling per meaning, so the hash does not depend on how it was typed: a value given
    once for every channel alike, the named forms by name."""
    values = normalise_values(text)
    if values is None:
        return None
    mean, std = (part[:1] if len(set(part)) == 1 and len(set(values[0])) == len(set(values[1])) == 1 else part
                 for part in values)
    for name, named in NORMALISE_NAMED.items():
        if (mean, std) == named:
            return name
    return "/".join(",".join(f"{v:g}" for v in part) for part in (mean, std))


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _check_image_size(model: str, dataset: str, image_size: int | None, *, own_model: bool) -> int | None:
    """Here, not when the job runs: a model too large for the images failed only after it was
    queued (or halfway through a sweep), with torch's word for it. A user's own model is tried
    on the images at submit instead (inputs.try_build). Returns a folder's image size."""
    from farm.models.sizes import too_small, too_small_input

    if not dataset.startswith(FOLDER):
        why = None if own_model else too_small(model, dataset)
    else:
        image_size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        if not 8 <= image_size <= MAX_IMAGE_SIZE:
            raise InvalidSpec(f"image_size must be from 8 to {MAX_IMAGE_SIZE} pixels, got {image_size}")
        why = None if own_model else too_small_input(model, image_size, image_size, "--image-size is")
    if why:
        raise InvalidSpec(why)
    return image_size


def _check_max_drop(spec: JobSpec) -> None:
    """The guarded search (farm.compress.guarded_prune) prunes gradually and splits the sparsity
    over the layers itself, so it takes neither another schedule nor another scope."""
    if spec.max_drop is None:
        return
    if isinstance(spec.max_drop, bool) or not isinstance(spec.max_drop, (int, float)) or not 0 <= spec.max_drop < 100:
        raise InvalidSpec(f"max_drop is accuracy points in [0, 100), got {spec.max_drop!r}")
    if spec.method != "gradual" or spec.scope != "global":
        raise InvalidSpec("max_drop runs the accuracy-guarded search, which prunes gradually and splits "
                          f"the sparsity itself: it needs method gradual and scope global, got "
                          f"{spec.method} / {spec.scope}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidSpec(f"{name} {value!r} is not one of {', '.join(choices)}")


def _check_bits(scheme: str, bits: int | None) -> int:
    if scheme in FLOAT_BITS:
        if bits not in (None, FLOAT_BITS[scheme]):
            raise InvalidSpec(f"scheme {scheme} stores {FLOAT_BITS[scheme]}-bit floats; bits {bits} "
                              f"needs a quantized scheme (linear, log, kmeans)")
        return FLOAT_BITS[scheme]
    if bits is None:
        raise InvalidSpec(f"scheme {scheme} needs bits (--bits; in a sweep file, bits:), from "
                          f"{QUANT_BITS.start} to {QUANT_BITS.stop - 1}")
    if bits not in QUANT_BITS:
        raise InvalidSpec(f"bits must be from {QUANT_BITS.start} to {QUANT_BITS.stop - 1} for scheme "
                          f"{scheme}, got {bits}")
    return bits


def _check_stages(stages: tuple[str, ...]) -> None:
    if stages in (NOOP, STALL):
        return
    if not stages or stages != PIPELINE[: len(stages)]:
        raise InvalidSpec(f"stages must be a prefix of {' -> '.join(PIPELINE)}, got {list(stages)}")


def canonical_model(name: str) -> str:
    from farm.models import names

    key = names.canonical_model(name)
    if key is None:
        own = ", ".join(names.OWN_MODELS + tuple(names.ALIASES))
        raise UnknownModel(f"unknown model {name!r}; choose from {own}, or a torchvision "
                           f"classification model (`farm models` lists all)")
    return key


def canonical_dataset(name: str) -> str:
    from farm.models import names

    key = names.canonical_dataset(name)
    if key is None:
        import os

        hint = f" (a folder of your images: folder:{name})" if os.path.isdir(os.path.expanduser(name)) else ""
        raise UnknownDataset(f"unknown dataset {name!r}{hint}; choose from {', '.join(names.DATASETS)}, "
                             f"or folder:PATH for your own images")
    return key
