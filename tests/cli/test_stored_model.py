"""A user finds the compressed model a job saved, copies it out and loads it (a new-user
walkthrough): `farm show` printed the artifact key, which is not the file's name, and the quantize
result's `size.path`, a scratch file deleted with the job's workdir."""

from __future__ import annotations

import json
from pathlib import Path

TINY = ["tiny", "--dataset", "synthetic", "--device", "cpu", "--recipe", "quick", "--subset", "64",
        "--epochs", "1", "--retrain-epochs", "1", "--finetune-epochs", "1", "--scheme", "kmeans", "--bits", "4"]


def _submit(farm) -> dict:
    code, out, err = farm("submit", *TINY, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def _one_error_line(result, words: str) -> None:
    code, out, err = result
    assert code == 1 and out == "", (out, err)
    assert err.startswith("farm: error: ") and err.count("\n") == 1 and words in err, err


def test_show_names_the_stored_files_and_no_scratch_path(farm):
    from farm.worker import artifacts

    detail = _submit(farm)
    stages = {s["name"]: s for s in detail["stages"]}
    stored = {f["what"]: f for f in detail["files"]}
    assert set(stored) == {"dense checkpoint", "pruned checkpoint", "compressed model"}
    for what, stage in [("compressed model", "quantize"), ("pruned checkpoint", "prune")]:
        path = artifacts.path_of(artifacts.lookup(stages[stage]["artifact_key"]))
        assert stored[what]["path"] == str(path) and path.is_file() and stored[what]["exists"]
        assert stored[what]["bytes"] == path.stat().st_size
    assert "path" not in stages["quantize"]["result"]["size"]  # the workdir's, deleted with it
    assert "/farm-job" not in json.dumps(detail)

    code, out, err = farm("show", detail["job"]["job_id"])
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("compressed model"))
    assert line.endswith(stored["compressed model"]["path"]), out  # whole, on one line, to copy
    assert f"farm export {detail['job']['job_id']} --out FILE" in err


def test_export_copies_the_model_out_and_it_loads_with_the_jobs_accuracy(farm, tmp_path):
    from farm.compress import evaluate, load_compressed
    from farm.models import get_model, load_dataset

    detail = _submit(farm)
    job, dest = detail["job"]["job_id"], tmp_path / "tiny-90.farm"
    code, out, err = farm("export", job, "--out", dest)
    stored = next(f for f in detail["files"] if f["what"] == "compressed model")
    assert code == 0 and out == "", err
    assert f"wrote {dest} ({stored['bytes']:,} bytes)" in err, err
    assert dest.read_bytes() == Path(stored["path"]).read_bytes()
    assert "get_model('tiny', in_channels=3, num_classes=10)" in err  # how to load it, in its words

    # as docs/USAGE.md says: the job's model, the file loaded into it, the job's accuracy
    model = load_compressed(dest).load_into(get_model("tiny", in_channels=3, num_classes=10))
    assert evaluate(model, load_dataset("synthetic", subset=64)) == detail["metrics"]["accuracy"]

    folder = tmp_path / "models"
    folder.mkdir()
    assert farm("export", job, "--out", folder)[0] == 0 and (folder / f"job{job}.farm").is_file()
    assert farm("export", job, "--out", f"{tmp_path}/new/")[0] == 0  # a folder not made yet
    assert (tmp_path / "new" / f"job{job}.farm").is_file()

    # an existing file is replaced only when asked; the artifact store's never (jobs share them)
    _one_error_line(farm("export", job, "--out", dest), f"{dest} exists; --force replaces it")
    assert farm("export", job, "--out", dest, "--force")[0] == 0
    _one_error_line(farm("export", job, "--out", stored["path"], "--force"), "is inside the artifact store")
    assert Path(stored["path"]).read_bytes() == dest.read_bytes()


def test_export_without_a_model_to_copy_is_one_error_line(farm, tmp_path, monkeypatch):
    from farm import db
    from farm.scheduler.spec import JobSpec
    from farm.scheduler.submission import record

    monkeypatch.chdir(tmp_path)  # where the default jobN.farm would go
    _one_error_line(farm("export", 99), "no job 99")
    detail = _submit(farm)
    job = detail["job"]["job_id"]
    (tmp_path / "a-file").write_text("")
    _one_error_line(farm("export", job, "--out", tmp_path / "a-file" / "m.farm"),
                    f"cannot write {tmp_path / 'a-file' / 'm.farm'}: Not a directory")
    Path(next(f["path"] for f in detail["files"] if f["what"] == "compressed model")).unlink()
    _one_error_line(farm("export", job), f"job {job}'s compressed model is gone from the artifact store")

    waiting = JobSpec(model="tiny", dataset="synthetic", device="cpu", sparsity=0.5).resolve()
    no_quantize = JobSpec(model="tiny", dataset="synthetic", device="cpu", sparsity=0.6,
                          stages=("train", "prune")).resolve()
    with db.session() as s:
        [first, second] = record(s, [waiting, no_quantize])
    _one_error_line(farm("export", first.job_id), f"job {first.job_id} has no compressed model: it is pending")
    _one_error_line(farm("export", second.job_id),
                    f"job {second.job_id} has no compressed model: its stages are train, prune")
    assert not list(tmp_path.glob("job*.farm"))  # nothing written by a failed export


def test_results_recorded_before_read_as_now():
    """Rows written before: the guarded search's drop as a fraction named like the spec's points,
    and the scratch path of the compressed model."""
    from farm.db.queries import _as_recorded_now

    old = {"max_drop": 0.003, "accuracy": 0.9, "size": {"path": "/tmp/farm-job1-x/model.farm", "ratio": 8.0}}
    assert _as_recorded_now(old) == {"max_drop_points": 0.3, "accuracy": 0.9, "size": {"ratio": 8.0}}
    assert _as_recorded_now(None) is None and _as_recorded_now({}) == {}
