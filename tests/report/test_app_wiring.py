"""The commands as the `farm` entry point exposes them, once the lead has wired them in."""

import json

import pytest
import typer
from typer.testing import CliRunner


def _registered() -> set[str]:
    from farm.cli.app import app

    return set(typer.main.get_command(app).commands)


@pytest.mark.skipif("plot" not in _registered(), reason="farm plot is not registered in farm.cli.app yet")
def test_farm_app_runs_plot_compare_and_report(results_db, tmp_path):
    from farm.cli.app import app

    runner = CliRunner()
    out = runner.invoke(app, ["plot", "pareto", "--sweep", str(results_db.grid_sweep), "--x", "size",
                              "--out", str(tmp_path / "p"), "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) and (tmp_path / "p.png").exists()
    md = runner.invoke(app, ["compare", "--sweep", str(results_db.grid_sweep), "--format", "markdown"])
    assert md.exit_code == 0 and md.stdout.startswith("| job_id |")
    rep = runner.invoke(app, ["report", "--sweep", str(results_db.grid_sweep), "--out",
                              str(tmp_path / "r.html"), "--max-layer-charts", "1"])
    assert rep.exit_code == 0 and (tmp_path / "r.html").stat().st_size > 10_000


def test_every_report_command_has_help():
    from .cli import APP

    group = typer.main.get_command(APP)
    plot = group.commands["plot"]
    commands = {**{n: c for n, c in group.commands.items() if n != "plot"}, **plot.commands}
    assert set(commands) == {"compare", "report", "pareto", "layers", "crossover"}
    for name, cmd in commands.items():
        assert cmd.help and len(cmd.help) > 20, name
        assert all(p.help for p in cmd.params if p.param_type_name == "option"), name


def test_pareto_of_job_ids_is_the_sweeps_front_for_the_sweeps_jobs(results_db, tmp_path):
    """Jobs run one at a time have a front too: `farm plot pareto 3 4 5` plots the jobs given."""
    from farm import db
    from farm.cli.app import app

    with db.session() as s:
        ids = [r.job_id for r in db.queries.jobs(s, sweep=results_db.grid_sweep)]
    runner = CliRunner()

    def front(*args):
        out = runner.invoke(app, ["plot", "pareto", *args, "--x", "size", "--format", "json"])
        assert out.exit_code == 0, out.output
        return sorted(r["job_id"] for r in json.loads(out.stdout))

    by_sweep = front("--sweep", str(results_db.grid_sweep), "--out", str(tmp_path / "s"))
    assert by_sweep and front(*map(str, ids), "--out", str(tmp_path / "j")) == by_sweep
    assert (tmp_path / "j.png").exists() and (tmp_path / "j.svg").exists()
    for args in ([], ["1", "--sweep", str(results_db.grid_sweep)]):  # main() prints it as one line
        bad = runner.invoke(app, ["plot", "pareto", *args])
        assert "give job ids (farm plot pareto 3 7 9) or --sweep ID" in str(bad.exception)


def test_a_report_of_job_ids(results_db, tmp_path):
    """Jobs run one at a time get a report too: their tables, fronts and environments, no spec."""
    from farm.cli.app import app

    runner = CliRunner()
    ids = [str(j) for j in results_db.timed_jobs[:3]]
    out = runner.invoke(app, ["report", *ids, "--out", str(tmp_path / "r.html"), "--max-layer-charts", "1"])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "r.html").read_text()
    assert f"<h1>farm report: jobs {', '.join(ids)}</h1>" in page and 'id="spec"' not in page
    assert all(f">{j}<" in page for j in ids)  # each job's row
    bad = runner.invoke(app, ["report", "--out", str(tmp_path / "x.html")])
    assert "give job ids (farm report 3 7 9) or --sweep ID" in str(bad.exception)
