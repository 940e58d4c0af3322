import numpy as np
import pytest
import torch

from farm.compress import (KMeansQuant, LinearQuant, LogQuant, MagnitudePruning, TrainConfig, prune_,
                           quant_config, quantize_, quantize_and_finetune)
from farm.compress.layers import weight_layers
from farm.errors import InvalidSpec


def _nonzero_masks(model):
    return {n: (w != 0).clone() for n, w in weight_layers(model).items()}


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_kmeans_levels_and_zeros_after_finetuning(trained, synthetic, bits):
    prune_(trained, MagnitudePruning(0.7, schedule="oneshot"))
    before = _nonzero_masks(trained)
    result = quantize_and_finetune(trained, synthetic, KMeansQuant(bits), TrainConfig(epochs=2, batch_size=64, lr=0.02))
    for name, w in weight_layers(trained).items():
        assert torch.equal(w != 0, before[name]), f"{name}: sparsity changed"
        assert torch.unique(w[w != 0]).numel() <= 2 ** bits
        st = result.tensors[name]
        assert st.scheme == "kmeans" and len(st.codebook) == 2 ** bits and st.codes.max() < 2 ** bits
        assert torch.equal(st.to_dense(), w.detach().cpu())  # the codes are the weights
    assert result.accuracy > 0.8 and result.to_dict()["quantization"]["bits"] == bits


def test_kmeans_finetuning_moves_centroids(trained, synthetic):
    prune_(trained, MagnitudePruning(0.7, schedule="oneshot"))
    one_shot = {n: st.codebook.copy() for n, st in quantize_(trained, KMeansQuant(3)).items()}
    result = quantize_and_finetune(trained, synthetic, KMeansQuant(3), TrainConfig(epochs=2, batch_size=64, lr=0.05))
    assert any(not np.allclose(one_shot[n], st.codebook) for n, st in result.tensors.items())


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_linear_error_within_half_a_step(trained, bits):
    prune_(trained, MagnitudePruning(0.6, schedule="oneshot"))
    original = {n: w.detach().clone() for n, w in weight_layers(trained).items()}
    tensors = quantize_(trained, LinearQuant(bits))
    for name, w in weight_layers(trained).items():
        st, w0 = tensors[name], original[name]
        assert torch.equal(w != 0, w0 != 0)
        step = torch.from_numpy(st.scales).view(-1, *[1] * (w.ndim - 1))
        codes = np.unique(st.codes.astype(int) - 2 ** (bits - 1))
        assert np.abs(codes).max() <= 2 ** (bits - 1) - 1 and 0 not in codes  # symmetric, nonzero
        err = (w.detach() - w0).abs()
        # Within half a step, except nonzeros smaller than half a step, which are kept at one step.
        small = w0.abs() < step / 2
        assert (err[~small] <= step.expand_as(w0)[~small] / 2 * (1 + 1e-6)).all()
        assert (w.detach()[small & (w0 != 0)].abs() == step.expand_as(w0)[small & (w0 != 0)]).all()


def test_log_levels_are_powers_of_two(trained):
    prune_(trained, MagnitudePruning(0.6, schedule="oneshot"))
    zero = _nonzero_masks(trained)
    tensors = quantize_(trained, LogQuant(4))
    for name, w in weight_layers(trained).items():
        assert torch.equal(w != 0, zero[name])
        mags = w[w != 0].abs()
        assert torch.equal(torch.exp2(torch.round(torch.log2(mags))), mags)
        assert len(tensors[name].codebook) == 16


@pytest.mark.parametrize("scheme", ["linear", "log"])
def test_straight_through_finetuning_keeps_sparsity_and_grid(trained, synthetic, scheme):
    prune_(trained, MagnitudePruning(0.7, schedule="oneshot"))
    zero = _nonzero_masks(trained)
    result = quantize_and_finetune(trained, synthetic, quant_config(scheme, 4), TrainConfig(epochs=2, batch_size=64, lr=0.02))
    for name, w in weight_layers(trained).items():
        assert torch.equal(w != 0, zero[name])
        assert torch.equal(result.tensors[name].to_dense(), w.detach().cpu())
    assert result.accuracy > 0.8


def test_skip_and_fp16_rest(trained):
    tensors = quantize_(trained, KMeansQuant(4, skip=("fc.*",), fp16_rest=True))
    assert "fc.weight" not in tensors
    for name, t in trained.state_dict().items():
        if t.is_floating_point() and name not in tensors:
            assert torch.equal(t.half().float(), t), name


@pytest.mark.parametrize("bits", [1, 9, 0, 2.5, True])
def test_bits_outside_2_to_8(bits):
    for cls in (LinearQuant, LogQuant, KMeansQuant):
        with pytest.raises(InvalidSpec, match="2 to 8"):
            cls(bits)


def test_unknown_scheme():
    with pytest.raises(InvalidSpec, match="unknown quantization scheme"):
        quant_config("ternary", 2)


def test_fold_bn_keeps_the_function_and_leaves_constant_statistics(synthetic, tmp_path):
    from farm.compress import TrainConfig, load_compressed, save_compressed, train
    from farm.models import get_model

    torch.manual_seed(0)
    model = get_model("tiny", width=16)
    train(model, synthetic, TrainConfig(epochs=2, batch_size=64))
    model.eval()
    x = synthetic.test_x[:64].contiguous(memory_format=torch.channels_last)
    before = model(x)
    tensors = quantize_(model, KMeansQuant(8, fold_bn=True))
    bn = model.bn2
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert (bn.running_var == bn.running_var[0]).all()
    # 8-bit codes: the output moves by the quantization only.
    assert torch.allclose(model(x), before, rtol=0.05, atol=0.05 * before.abs().max().item())
    small = save_compressed(model, tmp_path / "folded.farm", quantized=tensors)
    assert all(r["bytes"] == 0 for r in small.layers if "running" in r["name"])
    assert torch.equal(load_compressed(tmp_path / "folded.farm").state_dict()["bn2.running_var"], bn.running_var)


def test_recalibrate_bn_gives_the_batch_statistics(trained, synthetic):
    """One batch of every training image: the running statistics become that batch's mean and
    (unbiased) variance of each BatchNorm's input; momenta and modes are left as they were."""
    from farm.compress import recalibrate_bn

    seen = {}
    hook = trained.bn2.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].detach().clone()))
    trained.bn2.running_mean.fill_(5.0), trained.bn2.running_var.fill_(100.0)
    trained.eval()
    n = recalibrate_bn(trained, synthetic, batches=1, batch_size=len(synthetic.train_x))
    hook.remove()
    x = seen["x"].transpose(0, 1).reshape(x_channels := seen["x"].shape[1], -1)
    assert n == len(synthetic.train_x) and x_channels == trained.bn2.num_features
    assert torch.allclose(trained.bn2.running_mean, x.mean(1), atol=1e-5)
    assert torch.allclose(trained.bn2.running_var, x.var(1), rtol=1e-4)
    assert trained.bn2.momentum == 0.1 and not trained.training and not trained.bn2.training


@pytest.mark.parametrize("bits", [2, 4])
def test_one_shot_quantization_reestimates_batchnorm(trained, synthetic, bits):
    """A pipeline with no training at all (one-shot prune_, then quantize with epochs=0): the
    statistics re-estimated right after quantizing fit the weights the model now has. On this
    small model it is the pruning that had moved them (38% against 99% at 2 bits with the step
    off); a retrained 95%-sparse ResNet-20 lost them to the quantization (docs/RESULTS.md)."""
    import copy

    prune_(trained, MagnitudePruning(0.7, schedule="oneshot"))
    cfg = TrainConfig(epochs=0, batch_size=64)
    off = quantize_and_finetune(copy.deepcopy(trained), synthetic, KMeansQuant(bits, bn_recalibration=0), cfg)
    on = quantize_and_finetune(trained, synthetic, KMeansQuant(bits), cfg)
    assert on.accuracy_quantized == on.accuracy > 0.95
    assert on.accuracy > off.accuracy + 0.2
    assert on.to_dict()["quantization"]["bn_recalibration"] == 20
    with pytest.raises(InvalidSpec, match="bn_recalibration"):
        KMeansQuant(4, bn_recalibration=-1)


def test_fold_and_fp16_come_after_finetuning(trained, synthetic):
    import copy

    from farm.compress import evaluate

    prune_(trained, MagnitudePruning(0.7, schedule="oneshot"))
    plain, folded = copy.deepcopy(trained), copy.deepcopy(trained)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.02)
    a = quantize_and_finetune(plain, synthetic, KMeansQuant(4), cfg)
    b = quantize_and_finetune(folded, synthetic, KMeansQuant(4, fold_bn=True, fp16_rest=True), cfg)
    # Same fine-tuning (seeded), then an eval-equivalent fold: the same accuracy, and the model's.
    assert b.accuracy == pytest.approx(a.accuracy, abs=0.01)
    assert b.accuracy == evaluate(folded, synthetic)
    assert torch.equal(folded.bn2.running_mean, torch.zeros_like(folded.bn2.running_mean))


def test_channels_last_weights_as_on_the_gpu(trained, synthetic):
    """On CUDA the weights are channels_last: indexing must go by coordinates, not by memory."""
    from farm.compress import sensitivity_scan

    trained.to(memory_format=torch.channels_last)
    assert not trained.conv2.weight.is_contiguous()
    prune_(trained, MagnitudePruning(0.7, schedule="oneshot"))
    zero = _nonzero_masks(trained)
    sensitivity_scan(trained, synthetic, sparsities=(0.5,))
    assert all(torch.equal(w != 0, zero[n]) for n, w in weight_layers(trained).items())
    result = quantize_and_finetune(trained, synthetic, KMeansQuant(3), TrainConfig(epochs=1, batch_size=64, lr=0.02))
    for name, w in weight_layers(trained).items():
        assert torch.equal(w != 0, zero[name])
        assert torch.equal(result.tensors[name].to_dense(), w.detach().cpu())


@pytest.mark.parametrize("quant", [LinearQuant(2), LinearQuant(5), LogQuant(2), LogQuant(4)], ids=str)
def test_fake_quantize_matches_the_codes(trained, quant):
    from farm.compress.quantization import fake_quantize, quantize_tensor

    prune_(trained, MagnitudePruning(0.6, schedule="oneshot"))
    for name, w in weight_layers(trained).items():
        w = w.detach()
        assert torch.equal(fake_quantize(w, w != 0, quant), quantize_tensor(w, quant).to_dense())
