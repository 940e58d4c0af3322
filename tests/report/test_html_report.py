"""`farm report`: one self-contained HTML file, opened in headless Chromium like a person would."""

import re
import shutil
from pathlib import Path

import pytest

from farm.errors import NotFound

from .chromium import open_page
from .cli import invoke
from farm.report.document import STEP_COLUMNS

from .results_db import A100, H100

needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None,
                                    reason="Debian chromium is not installed (.ci/install installs it)")


@pytest.fixture(scope="module")
def report_file(filled, tmp_path_factory) -> Path:
    """The grid sweep's report, written once through the command."""
    url, truth = filled
    out = tmp_path_factory.mktemp("report") / "report.html"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FARM_DB_URL", url)
        result = invoke("report", "--sweep", truth.grid_sweep, "--out", out)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr
    return out


def test_report_is_self_contained(report_file):
    text = report_file.read_text()
    # Nothing the page could fetch: no remote src/href, no scripts, a CSP that forbids fetching.
    assert not re.search(r'(src|href)\s*=\s*"(?!data:|#)', text)
    assert "<script" not in text and "default-src 'none'" in text
    assert text.count('<img alt=') == text.count('src="data:image/svg+xml;base64,') >= 5


def test_report_holds_spec_tables_and_every_environment(report_file, filled):
    text = report_file.read_text()
    for env in (H100, A100):
        for key in ("gpu", "driver", "cuda", "cudnn", "torch", "pycuda"):
            assert f"<td>{env[key]}</td>" in text
    assert "sparsity: [0.5, 0.7, 0.9, 0.95]" in text  # the sweep file as submitted
    for heading in ("Results", "Pareto fronts", "Per-layer speedups", "Crossover sparsity",
                    "Sweep spec", "Environments of the measurements"):
        assert f">{heading}</h2>" in text
    assert "skipped: no GPU" in text and "CUDA error: out of memory" in text  # shown, not hidden


def test_report_lists_the_steps_of_a_stepped_prune(report_file, filled):
    _, truth = filled
    text = report_file.read_text()
    steps = text[text.index(">Prune steps</h2>"):text.index(">Pareto fronts</h2>")]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", steps)[1:]]
    cols = ["job_id", "sparsity", "accuracy", "reused", "from_job"]
    seen = [[r[STEP_COLUMNS.index(c)] for c in cols] for r in rows]
    failed, running, third = truth.failed_job, truth.running_job, truth.timed_jobs[2]
    assert seen == [  # the failed job took its first step; the running one took the failed job's whole prune
        [str(failed), "0.900", "94.55%", "yes", str(third)], [str(failed), "0.950", "94.31%", "no", "–"],
        [str(failed), "0.980", "93.88%", "no", "–"], [str(failed), "0.990", "92.95%", "no", "–"],
        [str(running), "0.900", "94.55%", "yes", str(third)], [str(running), "0.950", "94.31%", "yes", str(failed)],
        [str(running), "0.980", "93.88%", "yes", str(failed)], [str(running), "0.990", "92.95%", "yes", str(failed)]]


def test_report_without_stepped_prunes_has_no_steps_section(results_db, tmp_path):
    out = tmp_path / "cpu.html"
    assert invoke("report", "--sweep", results_db.untimed_sweep, "--out", out).exit_code == 0
    assert "Prune steps" not in out.read_text()


@needs_chromium
def test_report_opens_in_chromium_with_tables_and_images(report_file, tmp_path):
    shot = tmp_path / "report.png"
    page = open_page(report_file, screenshot=shot, width=1400, height=1000)
    assert page.console_errors == []
    assert all(u.startswith(("file:", "data:")) for u in page.requests), page.requests
    facts = page.facts
    results = next(t for t in facts["tables"] if t["css"] == "results")
    assert results["rows"] == 1 + 19 and results["width"] > 500 and results["height"] > 200
    assert len(facts["images"]) >= 5
    for img in facts["images"]:  # decoded (a broken image has no natural size) and laid out
        assert img["complete"] and img["naturalWidth"] > 300 and img["width"] > 300 and img["height"] > 150
    assert facts["scripts"] == 0 and facts["text"] > 2000

    from PIL import Image

    im = Image.open(shot).convert("L")
    assert im.size == (1400, 1000)
    inked = sum(im.histogram()[:200]) / (im.size[0] * im.size[1])
    assert inked > 0.02  # the page drew text and table rules, not a blank screen


@needs_chromium
def test_the_page_probe_sees_errors_and_fetches(tmp_path):
    """The probe above must be able to fail: a page with a console error and a remote image."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="http://192.0.2.1/x.png">'
                   '<script>console.error("boom")</script></body></html>')
    page = open_page(bad, timeout=20)
    assert any("boom" in e for e in page.console_errors)
    assert any(u.startswith("http://") for u in page.requests)


def test_report_of_sweep_without_results_still_shows_its_spec(results_db, tmp_path):
    out = tmp_path / "pending.html"
    result = invoke("report", "--sweep", results_db.pending_sweep, "--out", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "no finished job with results yet" in text and "grid: {model: [vgg16]}" in text
    assert "<img" not in text and "no finished job" in result.stderr


def test_report_of_unknown_sweep(results_db, tmp_path):
    result = invoke("report", "--sweep", 404, "--out", tmp_path / "r.html")
    assert isinstance(result.exception, NotFound) and not (tmp_path / "r.html").exists()


def test_report_with_png_images_and_no_layer_charts(results_db, tmp_path):
    out = tmp_path / "png.html"
    result = invoke("report", "--sweep", results_db.grid_sweep, "--out", out, "--images", "png",
                    "--max-layer-charts", 0)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert 'src="data:image/png;base64,' in text and "Per-layer speedups" not in text


def test_the_results_table_shows_the_setup_the_jobs_differ_in(results_db):
    """A lamp and a global job of one sweep read as one job twice without their scope (as in
    `farm compare`); a setup field all jobs share stays out."""
    from dataclasses import replace

    from farm import db
    from farm.report import compare_sweep
    from farm.report.document import _results

    with db.session() as s:
        comp = compare_sweep(s, results_db.grid_sweep)
    heads = lambda html: re.findall(r"<th[^>]*>(.*?)</th>", html)  # noqa: E731
    assert "scope" not in heads(_results(comp))
    first, *rest = comp.rows
    mixed = replace(comp, rows=[replace(first, scope="lamp"), *rest])
    shown = heads(_results(mixed))
    assert shown.index("scope") == shown.index("bits") + 1 and "run" not in shown
