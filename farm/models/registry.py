"""The model registry: a name and the dataset's channels/classes give an untrained nn.Module.

`resnet` is an alias of `resnet20`, the CIFAR-style ResNet-20 (0.27 M weights) for 28-32 px
inputs. Any other torchvision classification model is built by its torchvision name, without
pretrained weights (nothing downloads), with its first conv adapted to the input channels.
"""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn

from farm.errors import InvalidSpec, UnknownModel
from farm.models.names import ALIASES
from farm.models.resnet_cifar import CifarResNet
from farm.models.tiny import TinyCNN
from farm.models.vgg_cifar import CifarVGG


def _cifar_resnet(depth: int) -> Callable[..., nn.Module]:
    return lambda in_channels, num_classes, **o: CifarResNet(depth, in_channels, num_classes, **o)


def _cifar_vgg(config: str) -> Callable[..., nn.Module]:
    return lambda in_channels, num_classes, **o: CifarVGG(config, in_channels, num_classes, **o)


def _torchvision_resnet(name: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, num_classes: int, small_input: bool = True, **o) -> nn.Module:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **o)
        if small_input:
            # ImageNet stem (7x7/2 conv + max-pool) would shrink a 28-32 px image to 7-8 px at once.
            model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            _replace_first_conv(model, in_channels)
        return model

    return build


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "tiny": lambda in_channels, num_classes, **o: TinyCNN(in_channels, num_classes, **o),
    "resnet20": _cifar_resnet(20),
    "resnet32": _cifar_resnet(32),
    "resnet56": _cifar_resnet(56),
    "resnet18": _torchvision_resnet("resnet18"),
    "resnet50": _torchvision_resnet("resnet50"),
    "vgg11": _cifar_vgg("vgg11"),
    "vgg16": _cifar_vgg("vgg16"),
}


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(parent, child_name, nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.dilation, child.groups, child.bias is not None))
                return


def _torchvision_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_models() -> list[str]:
    """farm's own models and aliases first, then every torchvision classification model."""
    own = sorted(BUILDERS) + sorted(ALIASES)
    return own + [n for n in _torchvision_names() if n not in own]


def get_model(name: str, *, in_channels: int = 3, num_classes: int = 10, **options) -> nn.Module:
    """An untrained model; `options` go to its builder (e.g. small_input=False for resnet18)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key in BUILDERS:
        builder = BUILDERS[key]
    elif key in _torchvision_names():
        builder = _generic_torchvision(key)
    else:
        raise UnknownModel(f"unknown model {name!r}; `farm models` lists them (e.g. resnet20, vgg16, tiny)")
    try:
        return builder(in_channels=in_channels, num_classes=num_classes, **options)
    except TypeError as e:
        raise InvalidSpec(f"model {name!r} does not take these options {sorted(options)}: {e}") from None


def build_model(name: str, *, source: str | None = None, in_channels: int, num_classes: int) -> nn.Module:
    """A registry model, or with `source` the user's model file that `name` ('net.py:build')
    names (farm.models.user)."""
    if source is None:
        return get_model(name, in_channels=in_channels, num_classes=num_classes)
    from farm.models.user import build_from_source

    return build_from_source(source, name, in_channels=in_channels, num_classes=num_classes)


# Models whose training-mode output is a tuple with auxiliary heads' logits, which farm's training
# loop (one loss on one tensor) cannot take: built without those heads unless asked for them.
AUX_HEADS = ("googlenet", "inception_v3")


def _generic_torchvision(name: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, num_classes: int, **o) -> nn.Module:
        if name in AUX_HEADS:
            o = {"aux_logits": False, "init_weights": True, **o}  # init_weights: else a FutureWarning
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **o)
        if in_channels != 3:
            _replace_first_conv(model, in_channels)
        return model

    return build
