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


def test_the_note_says_why_and_is_left_out_when_the_user_chose_the_recipe(tmp_path):
    import os
    import subprocess
    import sys

    def submit(*args):
        env = {**os.environ, "HOME": str(tmp_path), "FARM_HOME": str(tmp_path / ".farm")}
        env.pop("FARM_BROKER_URL", None)
        env.pop("FARM_DB_URL", None)
        code = "import sys; sys.argv = ['farm'] + sys.argv[1:]; from farm.cli import main; main()"
        return subprocess.run([sys.executable, "-c", code, "submit", "tiny", "--dataset", "synthetic", "--subset", "64",
                               "--epochs", "1", "--retrain-epochs", "1", *args], capture_output=True, text=True, env=env)

    sent = submit("--device", "cpu", "--sparsity", "0.5")  # a CPU job: quick, and said so
    assert sent.returncode == 0 and sent.stderr.startswith("A CPU job: the quick CPU recipe"), sent.stderr
    chosen = submit("--device", "cpu", "--recipe", "quick", "--sparsity", "0.6")  # asked for: nothing to explain
    assert chosen.returncode == 0 and "quick CPU recipe" not in chosen.stderr, chosen.stderr


def _unlike(**kw) -> str | None:
    from farm.cli.app import _unlike_note

    return _unlike_note(JobSpec(model="resnet", device="cpu", **kw).resolve())


def test_a_quick_result_says_its_accuracies_are_not_like_for_like_with_the_real_epochs():
    """The pruned model trains on from the under-trained baseline: 74.52% against a dense 70.38%
    read as pruning improving accuracy."""
    assert _unlike(recipe="quick", sparsity=0.9) == (
        "the quick recipe trains the dense baseline for only 2 epochs and this model for 2+2 (train+retrain): "
        "accuracy and dense accuracy are not a like-for-like comparison")
    assert "for only 2 epochs and this model for 2+6 (train+retrain)" in _unlike(recipe="quick", sparsity=0.98)
    assert "for 2+2+1 (train+retrain+fine-tune)" in _unlike(recipe="quick", scheme="kmeans", bits=4)
    assert "for only 1 epoch and this model for 1+3" in _unlike(recipe="quick", epochs=1, retrain_epochs=3)
    assert _unlike(recipe="full") is None and _unlike(recipe="quick", retrain_epochs=0) is None


def test_the_note_follows_the_quick_result_row(tmp_path, monkeypatch, capsys):
    import sys

    from farm.cli.app import main
    from farm.db.session import dispose_all

    monkeypatch.setattr(sys, "argv", ["farm", "submit", "tiny", "--dataset", "synthetic", "--device", "cpu",
                                      "--subset", "64", "--epochs", "1", "--retrain-epochs", "2"])
    dispose_all()
    try:
        main()
    except SystemExit as e:
        assert e.code in (0, None)
    finally:
        dispose_all()
    out, err = capsys.readouterr()
    assert "dense" in out and "accuracy" in out, out
    assert ("note: the quick recipe trains the dense baseline for only 1 epoch and this model for 1+2 "
            "(train+retrain): accuracy and dense accuracy are not a like-for-like comparison\n") in err, err


def test_a_dense_model_near_chance_is_pointed_out():
    from types import SimpleNamespace

    from farm.cli.app import _chance_note

    spec = JobSpec(model="resnet", recipe="quick", device="cpu", subset=1000).resolve()
    note = _chance_note(SimpleNamespace(dense_accuracy=0.12), spec)
    assert note.startswith("the dense model reached only 12.0% (10 classes: chance is 10%)") and "now 1000" in note
    assert _chance_note(SimpleNamespace(dense_accuracy=0.5), spec) is None
    assert _chance_note(SimpleNamespace(dense_accuracy=None), spec) is None
