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
