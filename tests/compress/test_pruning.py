import copy

import pytest
import torch

from farm.compress import MagnitudePruning, TrainConfig, gradual_schedule, prune_, prune_and_retrain
from farm.compress.layers import weight_layers
from farm.compress.pruning import lamp_scores
from farm.errors import Cancelled, InvalidSpec

PRUNABLE = ("conv2.weight", "conv3.weight")  # tiny: conv1 is first, fc is the classifier


def _zero_count(model, names=PRUNABLE):
    layers = weight_layers(model)
    return sum(int((layers[n] == 0).sum()) for n in names), sum(layers[n].numel() for n in names)


@pytest.mark.parametrize("scope", ["global", "layer", "lamp"])
def test_one_shot_sparsity_is_exact(trained, scope):
    masks = prune_(trained, MagnitudePruning(0.9, schedule="oneshot", scope=scope))
    assert set(masks) == set(PRUNABLE)
    zeros, total = _zero_count(trained)
    if scope in ("global", "lamp"):
        assert zeros == round(0.9 * total)
    else:
        for name in PRUNABLE:
            w = weight_layers(trained)[name]
            assert int((w == 0).sum()) == round(0.9 * w.numel())
    # First conv and classifier are dense by default.
    assert int((weight_layers(trained)["conv1.weight"] == 0).sum()) == 0
    assert int((weight_layers(trained)["fc.weight"] == 0).sum()) == 0


def test_global_scope_prunes_small_weights_first(trained):
    before = {n: w.detach().abs().clone() for n, w in weight_layers(trained).items()}
    prune_(trained, MagnitudePruning(0.5, schedule="oneshot"))
    kept = torch.cat([before[n][weight_layers(trained)[n] != 0] for n in PRUNABLE])
    gone = torch.cat([before[n][weight_layers(trained)[n] == 0] for n in PRUNABLE])
    assert gone.max() <= kept.min()


def test_lamp_scores_are_scale_free():
    w = torch.tensor([0.5, -2.0, 1.0, 0.0])
    # sorted squares 0, 0.25, 1, 4: each over the sum of those at least as large
    assert torch.allclose(lamp_scores(w), torch.tensor([0.25 / 5.25, 1.0, 1 / 5, 0.0]))
    assert torch.allclose(lamp_scores(1000 * w), lamp_scores(w))


def test_lamp_ignores_a_layers_weight_scale(trained):
    """Scaling one layer's weights (which BatchNorm would undo) moves global magnitude pruning's
    split between layers, not LAMP's."""
    import copy

    def zeros_per_layer(model, scope):
        prune_(model, MagnitudePruning(0.8, schedule="oneshot", scope=scope))
        return [int((weight_layers(model)[n] == 0).sum()) for n in PRUNABLE]

    scaled = copy.deepcopy(trained)
    with torch.no_grad():
        weight_layers(scaled)["conv2.weight"].mul_(10)
    assert zeros_per_layer(copy.deepcopy(trained), "lamp") == zeros_per_layer(copy.deepcopy(scaled), "lamp")
    assert zeros_per_layer(copy.deepcopy(trained), "global") != zeros_per_layer(scaled, "global")


def test_keep_dense_is_configurable(trained):
    masks = prune_(trained, MagnitudePruning(0.5, schedule="oneshot", keep_dense=("conv3",)))
    assert set(masks) == {"conv1.weight", "conv2.weight", "fc.weight"}
    assert int((weight_layers(trained)["conv3.weight"] == 0).sum()) == 0


@pytest.mark.parametrize("schedule", ["oneshot", "gradual"])
def test_sparsity_stays_exact_through_retraining(trained, synthetic, schedule):
    seen = []

    def check(event):  # after every retraining epoch, the zeros are exactly the target
        seen.append(_zero_count(trained))

    result = prune_and_retrain(trained, synthetic, MagnitudePruning(0.8, schedule=schedule, steps=4, ramp=0.5),
                               TrainConfig(epochs=4, batch_size=64, lr=0.05), callback=check)
    zeros, total = _zero_count(trained)
    assert zeros == round(0.8 * total)
    assert result.sparsity == pytest.approx(zeros / total)
    if schedule == "oneshot":
        assert all(z == round(0.8 * t) for z, t in seen)
    else:  # the ramp ends half-way: the last two epochs are at the target
        assert [z == round(0.8 * t) for z, t in seen] == [False, False, True, True]
        assert [round(s, 6) for _, s in result.schedule] == sorted(round(s, 6) for _, s in result.schedule)
    assert result.accuracy > 0.9
    d = result.to_dict()
    assert {"name", "shape", "numel", "nonzeros", "sparsity"} <= set(d["layers"][0])
    assert d["accuracy"] == result.accuracy and "masks" not in d


def test_gradual_schedule_is_zhu_gupta_cubic():
    s = gradual_schedule(0.9, 10)
    assert s[-1] == pytest.approx(0.9)
    assert s[0] == pytest.approx(0.9 * (1 - 0.9 ** 3))
    assert s[4] == pytest.approx(0.9 - 0.9 * 0.5 ** 3)
    steps = [b - a for a, b in zip([0.0, *s], s)]
    assert steps == sorted(steps, reverse=True)  # prunes fast first, slowly at the end
    assert gradual_schedule(0.8, 4, initial=0.4) == pytest.approx([0.8 - 0.4 * (1 - k / 4) ** 3 for k in (1, 2, 3, 4)])


def test_per_layer_sparsities(trained):
    prune_(trained, MagnitudePruning(0.5, schedule="oneshot", layer_sparsity={"conv2.weight": 0.3, "conv3.weight": 0.95}))
    layers = weight_layers(trained)
    assert int((layers["conv2.weight"] == 0).sum()) == round(0.3 * layers["conv2.weight"].numel())
    assert int((layers["conv3.weight"] == 0).sum()) == round(0.95 * layers["conv3.weight"].numel())
    with pytest.raises(InvalidSpec, match="not prunable"):
        prune_(trained, MagnitudePruning(0.5, layer_sparsity={"fc.weight": 0.5}))


@pytest.mark.parametrize("bad", [dict(sparsity=1.0), dict(sparsity=-0.1), dict(sparsity=1.5),
                                 dict(sparsity=0.5, bn_recalibration=-1),
                                 dict(sparsity=0.5, schedule="sudden"), dict(sparsity=0.5, scope="row"),
                                 dict(sparsity=0.5, layer_sparsity={"conv2.weight": 1.0})])
def test_bad_pruning_specs(bad):
    with pytest.raises(InvalidSpec):
        MagnitudePruning(**bad)


def test_cancel_during_retraining(trained, synthetic):
    def cancel(event):
        raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        prune_and_retrain(trained, synthetic, MagnitudePruning(0.5), TrainConfig(epochs=3, batch_size=64),
                          callback=cancel)


def test_no_retraining_measures_the_pruned_model(trained, synthetic):
    from farm.compress import evaluate

    result = prune_and_retrain(trained, synthetic, MagnitudePruning(0.95, schedule="oneshot"), TrainConfig(epochs=0))
    zeros, total = _zero_count(trained)
    assert zeros == round(0.95 * total)
    assert result.accuracy == evaluate(trained, synthetic) != result.accuracy_before


def test_one_shot_pruning_without_retraining_reestimates_batchnorm(trained, synthetic):
    """The dense model's BatchNorm statistics do not fit the pruned one: re-estimated from training
    images (no retraining), a one-shot 70% prune keeps the model's accuracy; with them off it
    loses tens of points (58% against 99% on this model)."""
    stale = copy.deepcopy(trained)
    off = prune_and_retrain(stale, synthetic, MagnitudePruning(0.7, schedule="oneshot", bn_recalibration=0),
                            TrainConfig(epochs=0, batch_size=64))
    on = prune_and_retrain(trained, synthetic, MagnitudePruning(0.7, schedule="oneshot"),
                           TrainConfig(epochs=0, batch_size=64))
    assert on.accuracy >= on.accuracy_before - 0.02 and on.accuracy > off.accuracy + 0.2
    assert torch.equal(weight_layers(trained)["conv2.weight"] == 0, weight_layers(stale)["conv2.weight"] == 0)
    assert not torch.equal(trained.bn2.running_mean, stale.bn2.running_mean)


def test_regrowing_lets_pruned_weights_come_back_then_fixes_the_mask(trained, synthetic):
    """regrow=0.5: for half of the retraining the pruned weights' dense copies keep learning from
    the pruned model's gradients and the masks are recomputed from them (some weights pruned at
    first come back); then the mask is fixed, and the end is exactly as sparse as asked."""
    from farm.compress.pruning import MaskHooks
    from farm.compress.training import fit

    # 16 steps an epoch, 128 in all; no weight decay, so a pruned weight's copy moves only
    # through its gradient
    config = TrainConfig(epochs=8, batch_size=64, lr=0.05, weight_decay=0.0)
    hooks = MaskHooks(trained, MagnitudePruning(0.8, schedule="oneshot", regrow=0.5), total_steps=128)
    first = {n: m.clone() for n, m in hooks.masks.items()}
    copies = {n: w.clone() for n, w in hooks.shadow.items()}
    seen = []

    def check(event):  # every epoch, what the forward pass sees is exactly 80% zeros
        seen.append((_zero_count(trained), {n: m.clone() for n, m in hooks.masks.items()}))

    fit(trained, synthetic, config, hooks=hooks, callback=check)
    zeros, total = _zero_count(trained)
    assert zeros == round(0.8 * total) and all(z == (zeros, total) for z, _ in seen)
    came_back = sum(int((m & ~first[n]).sum()) for n, m in hooks.masks.items())
    assert came_back > 0
    assert not hooks.regrowing and not bool(hooks.on)
    # weights pruned in every mask there was never took part in a forward pass: their copies
    # moved only because their gradients reached them
    for n, w in hooks.shadow.items():
        never = ~first[n]
        for _, masks in seen:
            never &= ~masks[n]
        assert never.any() and not torch.equal(copies[n][never], w[never]), n
    # from the stop (step 64, the recompute there included) the mask no longer moves
    later = [masks for _, masks in seen[4:]]
    assert all(torch.equal(m[n], later[0][n]) for m in later for n in m)
    assert all(torch.equal(later[-1][n], hooks.masks[n]) for n in hooks.masks)


def test_without_regrowing_a_pruned_weight_stays_pruned(trained):
    """However large a pruned weight becomes, the next pruning event keeps it pruned; with
    regrowing it could win its place back."""
    from farm.compress.pruning import MaskHooks

    for regrow, stays in ((0.0, True), (1.0, False)):
        model = copy.deepcopy(trained)
        hooks = MaskHooks(model, MagnitudePruning(0.8, steps=4, ramp=0.5, regrow=regrow), total_steps=64)
        hooks.before_forward(11)  # the second event
        name = PRUNABLE[0]
        i = int((~hooks.masks[name]).flatten().nonzero()[0])
        with torch.no_grad():  # a pruned weight (and its copy, if any) grows large
            for t in [dict(model.named_parameters())[name]] + ([hooks.shadow[name]] if hooks.shadow else []):
                t.view(-1)[i] = 100.0
        hooks.before_forward(21)  # the third event
        assert bool(~hooks.masks[name].flatten()[i]) == stays
    assert not MaskHooks(copy.deepcopy(trained), MagnitudePruning(0.8), total_steps=64).shadow
    with pytest.raises(InvalidSpec, match="regrow"):
        MagnitudePruning(0.8, regrow=1.5)


def test_pruning_in_steps_reaches_each_level_and_counts_progress_over_all(trained, synthetic):
    from farm.compress import evaluate, prune_in_steps

    dense = evaluate(trained, synthetic)
    events, labels, zeros_at_step_end = [], [], []

    def watch(event):
        events.append((event["epoch"], event["epochs"]))
        labels.append(event["step"])
        if event["epoch"] in (2, 5):
            zeros_at_step_end.append(_zero_count(trained))

    result = prune_in_steps(trained, synthetic, MagnitudePruning(0.8, steps=2, ramp=0.5),
                            TrainConfig(epochs=9, batch_size=64, lr=0.05), [0.5, 0.8], [2, 3], callback=watch)
    assert events == [(e, 5) for e in range(1, 6)]  # one bar over both steps, not two
    assert labels[1] == "step 1/2 to 50%, epoch 2/5" and labels[2] == "step 2/2 to 80%, epoch 3/5"
    (z1, total), (z2, _) = zeros_at_step_end
    assert z1 == round(0.5 * total) and z2 == round(0.8 * total)
    assert result.sparsity == pytest.approx(0.8, abs=1 / total)
    assert result.accuracy_before == dense  # before the first step, not the last
    assert [(s["sparsity"], s["epochs"]) for s in result.steps] == [(0.5, 2), (0.8, 3)]
    assert result.train["epochs"] == 5 and [h["epoch"] for h in result.train["history"]] == [1, 2, 3, 4, 5]
    assert result.pruning["levels"] == [0.5, 0.8] and result.to_dict()["steps"][1]["accuracy"] == result.accuracy


@pytest.mark.parametrize("levels, epochs, pruning", [
    ([0.5, 0.7], [1, 1], MagnitudePruning(0.8)),  # does not end at the target
    ([0.8, 0.5], [1, 1], MagnitudePruning(0.5)),  # falls
    ([0.5, 0.8], [1], MagnitudePruning(0.8)),  # an epoch count short
    ([0.5, 0.8], [1, 1], MagnitudePruning(0.8, schedule="oneshot")),
    ([0.5, 1.0], [1, 1], MagnitudePruning(0.8)),
    ([0.5, 0.8], [1, 1], MagnitudePruning(0.8, initial_sparsity=0.6)),  # the first step would not prune
    ([0.5, 0.8], [1, 1.5], MagnitudePruning(0.8)),  # would fail only after the first step trained
])
def test_bad_steps(trained, synthetic, levels, epochs, pruning):
    from farm.compress import prune_in_steps

    with pytest.raises(InvalidSpec):
        prune_in_steps(trained, synthetic, pruning, TrainConfig(epochs=1), levels, epochs)
