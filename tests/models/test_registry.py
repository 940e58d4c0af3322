import pytest
import torch

from farm.errors import InvalidSpec, UnknownModel
from farm.models import get_model, list_models


@pytest.mark.parametrize("name,params", [("tiny", 3778), ("resnet", 269434), ("resnet20", 269434),
                                         ("resnet56", 852730), ("vgg16", 14722890)])
def test_builds_with_dataset_channels_and_classes(name, params):
    model = get_model(name, in_channels=1, num_classes=10)
    # Parameter counts pin the architectures (ResNet-20 of He et al. with option-A shortcuts: 0.27 M).
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_models_take_small_inputs_and_channels():
    model = get_model("resnet18", in_channels=1, num_classes=7)
    assert model.conv1.kernel_size == (3, 3)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    generic = get_model("mobilenet_v2", in_channels=1, num_classes=5)
    assert generic(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_list_models_names_the_alias_and_torchvision():
    names = list_models()
    assert {"resnet", "resnet20", "resnet32", "resnet56", "resnet18", "resnet50", "vgg11", "vgg16",
            "tiny", "mobilenet_v2"} <= set(names)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UnknownModel, match="resnet9000"):
        get_model("resnet9000")
    with pytest.raises(InvalidSpec):
        get_model("resnet20", bogus_option=1)


def test_models_with_auxiliary_heads_train_as_one_tensor():
    """googlenet (and inception_v3) return a tuple with their auxiliary heads' logits in training
    mode, which the training loop's loss cannot take: farm builds them without those heads."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor torchvision's init_weights FutureWarning
        model = get_model("googlenet", in_channels=1, num_classes=10)
    out = model.train()(torch.randn(2, 1, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    torch.nn.functional.cross_entropy(out, torch.tensor([1, 2])).backward()
    assert get_model("googlenet", num_classes=10, aux_logits=True).aux1 is not None  # asked for: kept
