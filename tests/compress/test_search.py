import pytest

from farm.compress import TrainConfig, guarded_prune, sensitivity_scan
from farm.compress.layers import weight_layers
from farm.compress.pruning import MagnitudePruning, prune_
from farm.compress.search import SensitivityResult, allocate, global_allocation
from farm.errors import InvalidSpec


def test_sensitivity_scan_restores_weights_and_reports_each_layer(trained, synthetic):
    before = {n: w.detach().clone() for n, w in weight_layers(trained).items()}
    scan = sensitivity_scan(trained, synthetic, sparsities=(0.5, 0.9, 0.99))
    assert [r["name"] for r in scan.layers] == ["conv2.weight", "conv3.weight"]
    assert all(len(r["accuracy"]) == 3 for r in scan.layers)
    # Pruning a layer to 99% hurts more than to 50%.
    assert all(r["accuracy"][2] < r["accuracy"][0] for r in scan.layers)
    assert all((before[n] == w).all() for n, w in weight_layers(trained).items())


def test_allocation_meets_the_target_and_favours_robust_layers():
    grid = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98]
    scan = SensitivityResult(0.90, grid, [
        {"name": "robust", "numel": 3000, "accuracy": [0.90, 0.90, 0.90, 0.89, 0.88, 0.80]},
        {"name": "fragile", "numel": 1000, "accuracy": [0.88, 0.80, 0.60, 0.40, 0.20, 0.10]}])
    for target in (0.6, 0.8, 0.9):
        plan = allocate(scan, target)
        assert (plan["robust"] * 3000 + plan["fragile"] * 1000) / 4000 == pytest.approx(target, abs=1e-6)
        assert plan["robust"] > plan["fragile"]


def test_guarded_prune_reaches_an_easy_target(trained, synthetic):
    result = guarded_prune(trained, synthetic, 0.8, 0.02, TrainConfig(epochs=3, batch_size=64, lr=0.05))
    assert result.reached and result.sparsity == pytest.approx(0.8, abs=1e-3)
    assert result.accuracy_dense - result.accuracy <= 0.02
    assert set(result.layer_sparsity) == {"conv2.weight", "conv3.weight"}
    assert result.to_dict()["trials"][0]["within_drop"]


def test_guarded_prune_reports_the_best_it_found_when_the_target_is_out_of_reach(trained, synthetic):
    seen = []
    result = guarded_prune(trained, synthetic, 0.995, 0.0, TrainConfig(epochs=1, batch_size=64, lr=0.05),
                           max_trials=3, callback=seen.append)
    assert not result.reached
    # progress over all the trials it may run: a new trial never sends the bar back to its start
    epochs = [(e["epoch"], e["epochs"]) for e in seen if e.get("epochs")]
    assert epochs == [(1, 3), (2, 3), (3, 3)], epochs
    assert [e["step"] for e in seen if e.get("epochs")][1] == "trial 2 (of at most 3) epoch 1/1"
    assert len(result.trials) == 3 and result.trials[0]["target"] == 0.995
    assert result.trials[1]["target"] < 0.995  # it backed off
    assert result.sparsity < 0.995


def test_global_allocation_is_global_magnitude_pruning(trained):
    import copy

    plan = global_allocation(trained, 0.7)
    pruned = copy.deepcopy(trained)
    prune_(pruned, MagnitudePruning(0.7, schedule="oneshot"))
    for name, s in plan.items():
        w = weight_layers(pruned)[name]
        assert s == pytest.approx(float((w == 0).sum()) / w.numel())
    sizes = {n: weight_layers(trained)[n].numel() for n in plan}
    assert sum(plan[n] * sizes[n] for n in plan) / sum(sizes.values()) == pytest.approx(0.7, abs=1e-3)


@pytest.mark.parametrize("allocation", ["global", "sensitivity"])
def test_guarded_prune_allocations(trained, synthetic, allocation):
    result = guarded_prune(trained, synthetic, 0.8, 0.02, TrainConfig(epochs=3, batch_size=64, lr=0.05),
                           allocation=allocation)
    assert result.reached and result.sparsity == pytest.approx(0.8, abs=1e-3)


def test_guarded_prune_backs_off_by_doubling_the_density(trained, synthetic):
    result = guarded_prune(trained, synthetic, 0.995, 0.0, TrainConfig(epochs=1, batch_size=64, lr=0.05),
                           max_trials=2)
    assert not result.trials[0]["within_drop"]  # 99.5% with no drop allowed: out of reach
    assert result.trials[1]["target"] == pytest.approx(0.99)


def test_guarded_prune_rejects_bad_targets(trained, synthetic):
    with pytest.raises(InvalidSpec):
        guarded_prune(trained, synthetic, 0.5, 0.01, TrainConfig(epochs=1), allocation="uniform")
    with pytest.raises(InvalidSpec):
        guarded_prune(trained, synthetic, 1.0, 0.01, TrainConfig(epochs=1))
    with pytest.raises(InvalidSpec):
        guarded_prune(trained, synthetic, 0.5, -0.1, TrainConfig(epochs=1))
