"""Listing filters that no job can match are an error naming the choices, as `farm status
--status bogus` is; `farm results --scheme bogus` said "nothing to show" and exit 0, as if such
jobs had simply not run yet. A valid value with no rows is still an empty listing."""

import pytest


@pytest.mark.parametrize("args, words", [
    (["results", "--scheme", "bogus"], "unknown scheme 'bogus'; choose from fp32, fp16, linear, log, kmeans"),
    (["results", "--scheme", "fp32", "--scheme", "kmean"], "unknown scheme 'kmean'"),
    (["results", "--dataset", "mnist"], "unknown dataset 'mnist'; choose from cifar10, fashion-mnist, synthetic"),
    (["results", "--model", "resnet21"], "unknown model 'resnet21'; choose from resnet18, resnet20"),
    (["results", "--bits", "12"], "no job has 12 bits; choose from 2 to 8 (linear, log, kmeans), 16 (fp16) or 32"),
    (["results", "--sparsity-min", "90"], "--sparsity-min takes a fraction from 0 to 1 (0.9 for 90%), got 90"),
    (["results", "--sparsity-max", "-0.5"], "--sparsity-max takes a fraction from 0 to 1"),
    (["results", "--sparsity-min", "0.95", "--sparsity-max", "0.5"],
     "--sparsity-min 0.95 is above --sparsity-max 0.5: no job can match both"),
    (["results", "--min-sparsity", "0.9", "--max-sparsity", "0.8"], "--sparsity-min 0.9 is above --sparsity-max 0.8"),
    (["results", "--sweep", "7"], "no sweep 7"),
    (["status", "--sweep", "7"], "no sweep 7"),
    (["status", "--status", "bogus"], "unknown status 'bogus'; choose from pending"),
], ids=lambda a: " ".join(a) if isinstance(a, list) else None)
def test_a_filter_no_job_can_match_is_one_error_line(farm, args, words):
    code, out, err = farm(*args)
    assert code == 1 and out == "", (out, err)
    assert err.startswith("farm: error: ") and err.count("\n") == 1 and words in err, err


@pytest.mark.parametrize("args", [["results", "--scheme", "kmeans"], ["results", "--model", "resnet"],
                                  ["results", "--model", "mobilenet_v2"], ["results", "--dataset", "CIFAR10"],
                                  ["results", "--bits", "4", "--bits", "16", "--sparsity-min", "0.9"],
                                  ["results", "--sparsity-min", "0.5", "--sparsity-max", "0.5"],
                                  ["status", "--status", "running"]])
def test_a_valid_filter_with_no_rows_yet_is_an_empty_listing(farm, args):
    code, out, err = farm(*args)
    assert code == 0 and "nothing to show" in out, (out, err)
