"""The image sizes the scheduler checks jobs with agree with the loaders and the models."""

import pytest
import torch
import torchvision

from farm.errors import InvalidSpec
from farm.models import get_model, list_models, load_dataset, names
from farm.models.sizes import IMAGE_SIZES, MIN_SIDES, SHAPES
from farm.scheduler.spec import JobSpec

# torchvision's weights say these need more than our smallest images; they run on 16 px
WEIGHTS_OVERSTATE = ("efficientnet_v2", "swin")


def test_every_dataset_has_its_size_and_the_loader_uses_it():
    assert set(IMAGE_SIZES) == set(names.DATASETS)
    assert set(SHAPES) == set(names.DATASETS)
    for name in ("synthetic", "fashion-mnist"):  # cifar10 is not installed here (nothing downloads)
        data = load_dataset(name)  # the tensors, not the loader's fields (which read the tables)
        shape = (data.train_x.shape[1], int(max(data.train_y.max(), data.test_y.max())) + 1)
        assert (tuple(data.train_x.shape[2:]), shape) == (IMAGE_SIZES[name], SHAPES[name])


def test_a_stage_builds_its_model_without_reading_the_data(tmp_path):
    """A worker's stage that loads its input model and then waits for another job (deferred,
    round after round) must not have read the dataset for the model's shape."""
    from farm.worker.stages import StageContext

    ctx = StageContext(spec=JobSpec(model="resnet20", dataset="fashion-mnist").resolve(), device="cpu",
                       workdir=tmp_path, callback=lambda e: None)
    assert ctx.new_model().conv1.in_channels == 1 and ctx._data is None


def test_declared_models_exist():
    assert set(MIN_SIDES) <= set(list_models())


def test_torchvision_models_that_need_more_than_our_smallest_images_are_declared():
    """A torchvision release adding such a model fails here until it is measured and declared."""
    smallest = min(min(size) for size in IMAGE_SIZES.values())
    for name in torchvision.models.list_models(module=torchvision.models):
        if name in names.OWN_MODELS or name.startswith(WEIGHTS_OVERSTATE):
            continue
        declared = min(min(w.meta["min_size"]) for w in torchvision.models.get_model_weights(name))
        if declared > smallest:
            assert MIN_SIDES.get(name) == declared, name


@pytest.mark.parametrize("name", ["squeezenet1_1", "googlenet"])
def test_the_declared_side_runs_and_one_pixel_less_does_not(name):
    model = get_model(name, in_channels=1).eval()
    side = MIN_SIDES[name]
    with torch.no_grad():
        model(torch.randn(2, 1, side, side))
        with pytest.raises(RuntimeError):
            model(torch.randn(2, 1, side - 1, side - 1))


def test_a_model_too_large_for_the_images_is_refused_with_both_sizes():
    with pytest.raises(InvalidSpec) as e:
        JobSpec(model="inception_v3", dataset="fashion-mnist").resolve()
    assert str(e.value).startswith("model inception_v3 needs images of at least 75x75 pixels, but "
                                   "fashion-mnist's are 28x28")
    assert "\n" not in str(e.value)
    with pytest.raises(InvalidSpec, match="squeezenet1_0 needs images of at least 21x21"):
        JobSpec(model="squeezenet1_0", dataset="synthetic").resolve()


@pytest.mark.parametrize("model, dataset", [("squeezenet1_0", "fashion-mnist"), ("vgg16", "synthetic"),
                                            ("tiny", "synthetic"), ("swin_t", "synthetic")])
def test_models_that_fit_the_images_pass(model, dataset):
    assert JobSpec(model=model, dataset=dataset).resolve().model == model


@pytest.mark.parametrize("dataset", ["fashion-mnist", "synthetic"])
def test_the_hint_names_every_own_model_that_takes_the_images_in_a_stable_order(dataset):
    """It named four of them (resnet20, resnet56, vgg16, resnet18): resnet32, vgg11 and tiny were missing."""
    with pytest.raises(InvalidSpec) as e:
        JobSpec(model="inception_v3", dataset=dataset).resolve()
    hint = str(e.value).split("models made for small images: ")[1]
    assert hint == ", ".join(names.OWN_MODELS)  # every one of them fits 16 px and more
    assert hint == "resnet18, resnet20, resnet32, resnet50, resnet56, tiny, vgg11, vgg16"
    for name in hint.split(", "):
        assert JobSpec(model=name, dataset=dataset).resolve().model == name
