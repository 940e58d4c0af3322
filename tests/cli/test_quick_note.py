"""The note `farm submit` prints when it falls back to the quick recipe: the epochs it names are
the ones that will run, here and on a GPU."""

from farm.cli.app import _quick_note
from farm.scheduler.spec import JobSpec


def _note(**kw) -> str:
    return _quick_note(JobSpec(model="resnet", recipe="quick", device="cpu", **kw).resolve())


def test_the_note_counts_every_prune_step_and_fine_tuning_only_when_quantized():
    plain = _note(sparsity=0.9)
    assert "2+2 epochs of train+retrain," in plain and "40+60 epochs of train+retrain)" in plain
    stepped = _note(sparsity=0.98)  # 90 -> 95 -> 98%: 2+2+2 here, 60+50+70 on a GPU
    assert "2+6 epochs of train+retrain," in stepped and "40+180 epochs of train+retrain)" in stepped
    quantized = _note(sparsity=0.9, scheme="kmeans", bits=4)
    assert "2+2+1 epochs of train+retrain+fine-tune," in quantized and "40+60+6 epochs" in quantized
