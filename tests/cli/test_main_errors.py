"""Faults outside farm's own checks still come out as one line and exit 1."""

import subprocess
import sys


def _farm(*args, env=None):
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "farm.cli.app", *args], capture_output=True,
                          text=True, timeout=120, env=full)


def _one_line(r, expected: str):
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert expected in r.stderr


def test_unusable_home_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _one_line(_farm("status", env={"FARM_HOME": str(blocker / "home")}), "farm: error:")


def test_bad_number_setting_is_one_line(tmp_path):
    _one_line(_farm("status", env={"FARM_HOME": str(tmp_path), "FARM_JOB_TIME_LIMIT": "12h"}),
              "FARM_JOB_TIME_LIMIT) must be a whole number")


def test_bad_config_file_is_one_line(tmp_path):
    config = tmp_path / "farm.toml"
    config.write_text("db_url = \n")
    _one_line(_farm("status", env={"FARM_HOME": str(tmp_path), "FARM_CONFIG": str(config)}),
              "is not valid TOML")


def test_zero_in_config_file_is_a_value(tmp_path, monkeypatch):
    from farm import settings

    config = tmp_path / "farm.toml"
    config.write_text("gpu_index = 0\n")
    monkeypatch.setenv("FARM_CONFIG", str(config))
    assert settings.load().gpu_index == 0


def test_misspelt_setting_in_config_file_is_one_line(tmp_path):
    config = tmp_path / "farm.toml"
    config.write_text('brokr_url = "redis://127.0.0.1:6379/0"\n')  # ignored before: ran in-process
    _one_line(_farm("status", env={"FARM_HOME": str(tmp_path), "FARM_CONFIG": str(config)}),
              "unknown setting 'brokr_url'")


def test_missing_config_file_named_by_farm_config_is_one_line(tmp_path):
    _one_line(_farm("status", env={"FARM_HOME": str(tmp_path), "FARM_CONFIG": str(tmp_path / "nope.toml")}),
              "not a file")


def test_status_of_an_unknown_job_is_one_line(tmp_path):
    # was "jobs: nothing to show" and exit 0, while `farm show 99` said "no job 99"
    _one_line(_farm("status", "99", env={"FARM_HOME": str(tmp_path)}), "no job 99")


def test_a_job_that_fails_here_is_one_error_line_and_its_traceback_is_in_the_log(tmp_path):
    # An artifact store under a file: the first stage's output cannot be saved (a failure farm
    # does not expect; Inception-v3 on 16 px images was one, and is now refused at submit)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = _farm("submit", "tiny", "--dataset", "synthetic", "--device", "cpu", "--recipe", "quick",
              "--subset", "64", "--epochs", "1", "--sparsity", "0.5",
              env={"FARM_HOME": str(tmp_path), "FARM_ARTIFACTS": str(blocker / "artifacts")})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    log = tmp_path / "farm.log"
    [line] = [x for x in r.stderr.splitlines() if "error" in x]
    assert line.startswith("farm: error: job 1 failed: NotADirectoryError: ") and str(log) in line
    assert "Traceback" in log.read_text() and "job 1 failed" in log.read_text()


def test_a_broker_that_is_not_redis_is_one_line(tmp_path):
    _one_line(_farm("status", env={"FARM_HOME": str(tmp_path), "FARM_BROKER_URL": "amqp://guest@localhost//"}),
              "must be a Redis URL (redis://host:6379/0), got 'amqp://guest@localhost//'")


def test_the_log_a_failed_job_points_to_says_why_it_failed(tmp_path):
    # a failure farm expects (a dataset not installed) was only the CLI's line: the log named the
    # attempt and nothing after it
    from .test_walkthrough import corrupt_fashion_mnist

    r = _farm("submit", "tiny", "--dataset", "fashion-mnist", "--device", "cpu", "--sparsity", "0.5",
              env={"FARM_HOME": str(tmp_path), "FARM_DATA_DIR": str(corrupt_fashion_mnist(tmp_path / "data"))})
    assert r.returncode == 1 and str(tmp_path / "farm.log") in r.stderr, r.stderr
    text = (tmp_path / "farm.log").read_text()
    assert "job 1 attempt 1 failed: Fashion-MNIST file" in text, text
    assert "Traceback" not in text and text.count("is corrupt") == 1, text  # no traceback for an expected one
