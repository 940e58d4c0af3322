"""The libraries fit together as the worker uses them: a compressed file's quantized weights
reach the kernels as stored (the benchmark stage times what the job produced)."""

import torch

from farm.compress import KMeansQuant, MagnitudePruning, TrainConfig, load_compressed, prune_and_retrain, \
    quantize_and_finetune, save_compressed
from farm.kernels import SparseConv2d, sparsify
from farm.models import get_model, load_dataset


def test_kernels_take_the_compressed_records_as_stored(tmp_path):
    data = load_dataset("synthetic", subset=256)
    model = get_model("resnet20", in_channels=data.in_channels, num_classes=data.num_classes)
    prune_and_retrain(model, data, MagnitudePruning(sparsity=0.9), TrainConfig(epochs=1, batch_size=64))
    quantize_and_finetune(model, data, KMeansQuant(4, fp16_rest=True, fold_bn=True),
                          TrainConfig(epochs=1, batch_size=64))
    save_compressed(model, tmp_path / "m.farm")

    stored = load_compressed(tmp_path / "m.farm")
    fresh = get_model("resnet20", in_channels=data.in_channels, num_classes=data.num_classes)
    stored.load_into(fresh)
    fresh.eval()
    fast = sparsify(fresh, weights=stored.tensors)

    sparse = [m for m in fast.modules() if isinstance(m, SparseConv2d)]
    assert sparse and {m.weight_record.scheme for m in sparse} == {"kmeans"}
    assert {m.weight_record.bits for m in sparse} == {4}
    x = data.test_x[:16]
    with torch.no_grad():
        torch.testing.assert_close(fast(x), fresh(x), rtol=1e-4, atol=1e-4)
