"""A user's own model: a Python file that builds it, and a checkpoint of trained weights.

`FILE.py:NAME` names a function or nn.Module class in FILE.py that returns (or is) the model.
It is called with the keywords it declares among `in_channels` and `num_classes` (the dataset's),
and with none if it declares neither, so a plain `class Net(nn.Module)` with a fixed head works
as well as `def build(num_classes)`. The file is run as a module of its own, from its text, so a
worker on another host runs exactly the text that was submitted (farm.scheduler.inputs stores it).
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sys
import types
from pathlib import Path

import torch
from torch import nn

from farm.errors import CheckpointMismatch, InvalidSpec
from farm.models.names import is_model_file, split_ref  # noqa: F401: re-exported, where a notebook looks

BUILDER_ARGS = ("in_channels", "num_classes")


def load_module(source: str, filename: str) -> types.ModuleType:
    """Run `source` as a fresh module; any error in it is one line naming the file.

    The module is registered in sys.modules under a name of its own text (as an import would be),
    which dataclasses and typing look it up by; its code is compiled without this file's
    `from __future__` imports; and sys.argv is just its name while it runs, so a training
    script's module-level argparse does not read farm's own command line."""
    name = f"farm_user_{hashlib.sha256(source.encode()).hexdigest()[:12]}_{Path(filename).stem}"
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    argv, sys.argv = sys.argv, [filename]
    try:
        exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)  # noqa: S102: the user's model
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # SystemExit too: a script's sys.exit() or argparse error
        del sys.modules[name]
        hint = ("; a model file runs from farm's stored copy, not its folder: put what it imports from "
                "its neighbours in it, or install that as a package") if isinstance(e, ImportError) else ""
        raise InvalidSpec(f"model file {filename} failed to run: {_why(e)}{hint}") from None
    finally:
        sys.argv = argv
    return module


def candidates(module: types.ModuleType) -> list[str]:
    """Names in the file that could build a model: its own nn.Module classes and functions."""
    own = [(n, v) for n, v in vars(module).items() if getattr(v, "__module__", None) == module.__name__]
    return [n for n, v in own if not n.startswith("_") and
            (inspect.isfunction(v) or (inspect.isclass(v) and issubclass(v, nn.Module)))]


def builder(module: types.ModuleType, name: str | None, filename: str):
    """The callable `name` of the module; without a name, say which names could be meant."""
    found = ", ".join(candidates(module)) or "none"
    if name is None:
        raise InvalidSpec(f"say which builder in {filename} makes the model: {filename}:NAME "
                          f"(functions and nn.Module classes in it: {found})")
    fn = getattr(module, name, None)
    if not callable(fn):
        raise InvalidSpec(f"{filename} has no function or class {name!r} (it has: {found})")
    return fn


def build(fn, *, in_channels: int, num_classes: int, where: str) -> nn.Module:
    """Call the builder with the keywords it takes; it must give an nn.Module."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        params = {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    given = {"in_channels": in_channels, "num_classes": num_classes}
    kwargs = {k: v for k, v in given.items() if takes_any or k in params}
    try:
        model = fn(**kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        raise InvalidSpec(f"{where}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) raised {_why(e)}") from None
    if not isinstance(model, nn.Module):
        raise InvalidSpec(f"{where} returned {type(model).__name__}, not a torch nn.Module")
    return model


def build_from_source(source: str, ref: str, *, in_channels: int, num_classes: int) -> nn.Module:
    """The model that `ref` ('net.py:build') names, its file's text being `source`."""
    filename, name = split_ref(ref)
    module = load_module(source, filename)
    return build(builder(module, name, filename), in_channels=in_channels, num_classes=num_classes,
                 where=f"{filename}:{name}")


def check_output(model: nn.Module, *, in_channels: int, side: int, num_classes: int, where: str) -> None:
    """One forward pass of two images: the model takes the dataset's images and gives one logit
    per class. Said at submit, not after a queue and an epoch: a head of 1,000 classes on a
    10-class dataset, or a stem for RGB on grey images."""
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, in_channels, side, side))
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        hint = ""
        if "channels" in str(e) and "groups" in str(e):  # torch's word for a stem of other channels
            hint = (f"; take in_channels as a parameter (the images have {in_channels}), or give images "
                    f"of the channels the model has")
        raise InvalidSpec(f"{where} cannot take the dataset's images ({in_channels} channel"
                          f"{'s' if in_channels > 1 else ''}, {side}x{side}): {_why(e)}{hint}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InvalidSpec(f"{where} gives {got} for 2 images, not (2, {num_classes}): one logit per class "
                          f"of the dataset (take num_classes as a parameter to follow it)")


def read_state(path: Path, label: str | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint's state_dict: saved alone, or under 'state_dict' / 'model' / 'model_state_dict'
    (the usual wrappers of training scripts). Loaded weights-only: a checkpoint is data, and
    unpickling arbitrary objects from it would run code."""
    label = label or path.name
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointMismatch(f"checkpoint {label} cannot be read as torch weights ({_load_error(e)}); "
                                 f"save the weights alone: torch.save(model.state_dict(), path)") from None
    if isinstance(blob, dict) and not _tensors(blob):
        blob = _wrapped(blob, label)
    if not isinstance(blob, dict) or not _tensors(blob):
        raise CheckpointMismatch(f"checkpoint {label} holds no state_dict (tensors by name){_keys(blob)}; save it "
                                 f"with torch.save(model.state_dict(), path)")
    return blob


WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "state", "ema")  # training scripts' names


def _tensors(d: dict) -> bool:
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def _wrapped(blob: dict, label: str):
    """The state_dict inside a training script's checkpoint: under one of the usual names, else
    the one entry that is a mapping of tensors."""
    for key in WRAPPER_KEYS:
        if isinstance(blob.get(key), dict) and _tensors(blob[key]):
            return blob[key]
    found = [k for k, v in blob.items() if isinstance(v, dict) and _tensors(v)]
    if len(found) > 1:
        raise CheckpointMismatch(f"checkpoint {label} holds several sets of weights ({', '.join(map(str, found))}); "
                                 f"save the one to compress alone: torch.save(ckpt[{found[0]!r}], path)")
    return blob[found[0]] if found else blob


def _keys(blob) -> str:
    if isinstance(blob, dict) and blob:
        names = [str(k) for k in blob][:6]
        return f" (its entries: {', '.join(names)}{', ...' if len(blob) > 6 else ''})"
    return f" (it holds a {type(blob).__name__})"


def _fit_names(state: dict[str, torch.Tensor], own: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's names as the model has them: DataParallel saves every name under
    'module.', a Lightning module under its attribute ('model.', 'net.'); one prefix shared by
    every name is dropped where that makes the names the model's."""
    prefixes = {k.split(".", 1)[0] for k in state if "." in k}
    if set(state) != set(own) and len(prefixes) == 1 and all("." in k for k in state):
        stripped = {k.split(".", 1)[1]: v for k, v in state.items()}
        if set(stripped) == set(own) or prefixes == {"module"}:
            return stripped
    return state


def load_checkpoint(model: nn.Module, path: Path, *, name: str | None = None) -> nn.Module:
    """Load `path`'s weights into `model`, which must have exactly those names and shapes."""
    label = name or path.name
    own = model.state_dict()
    state = _fit_names(read_state(path, label), own)
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or extra or shapes:
        parts = [f"missing {_few(missing)}" if missing else "", f"unexpected {_few(extra)}" if extra else "",
                 f"shapes differ: {_few(shapes)}" if shapes else ""]
        raise CheckpointMismatch(f"checkpoint {label} does not fit the model: "
                                 + "; ".join(p for p in parts if p))
    model.load_state_dict(state)
    return model


def _few(items: list[str], n: int = 3) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def _why(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return f"it exited (sys.exit({e.code!r}))"
    return f"{type(e).__name__}: {_first_line(e)}"


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _load_error(e: Exception) -> str:
    """torch's weights-only refusal runs to a page, coloured, its reason in the middle: the
    object it would not unpickle is what the user can act on."""
    text = ANSI.sub("", str(e))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"it holds a {found.group(1)} object: a whole pickled model, or objects besides tensors "
                f"and plain Python values, which are not loaded, being code")
    if "Weights only load failed" in text:  # not a pickle torch wrote: a text file, another format
        return "not a file torch.save wrote"
    return f"{type(e).__name__}: {_first_line(Exception(text))}"
