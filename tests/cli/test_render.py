"""Tables in a narrow terminal: one result row must not fold its numbers."""

import io

from rich.console import Console

from farm.cli import render
from farm.cli.render import Format

ROW = {"job_id": 1, "model": "resnet20", "dataset": "fashion-mnist", "target_sparsity": 0.98, "sparsity": 0.98,
       "scheme": "fp32", "bits": 32, "accuracy": 0.9381, "dense_accuracy": 0.9456, "compression_ratio": 27.27,
       "compressed_bytes": 41033, "best_speedup_fp32": 3.144}


def _render(monkeypatch, width: int, rows: list[dict], **options) -> str:
    console = Console(width=width, record=True, file=io.StringIO())  # utf-8 borders whatever the locale
    monkeypatch.setattr(render, "out", console)
    render.rows(rows, Format.table, **options)
    return console.export_text()


def test_one_row_too_wide_for_the_terminal_is_shown_as_fields(monkeypatch):
    narrow = _render(monkeypatch, 80, [ROW])
    assert "│ target_sparsity   │ 0.980         │" in narrow and "93.81%" in narrow and "41033" in narrow
    assert max(len(line) for line in narrow.splitlines()) <= 80


def test_a_row_that_fits_stays_a_table(monkeypatch):
    wide = _render(monkeypatch, 200, [ROW])
    assert "target sparsity" in wide.splitlines()[1] and "field" not in wide
    several = _render(monkeypatch, 80, [ROW, {**ROW, "job_id": 2}])  # several rows: a table still
    assert "field" not in several


def test_several_rows_too_wide_leave_out_optional_columns_and_say_so(monkeypatch):
    from farm.cli.app import STATUS_COLUMNS, STATUS_OPTIONAL

    jobs = [{"job_id": i, "status": "succeeded", "model": "tiny", "dataset": "synthetic", "sparsity": s,
             "scheme": "fp32", "bits": 32, "device": "cpu", "stage": None, "progress": 1.0, "attempts": 1,
             "worker": "vm/4026531836:25981", "message": "benchmark skipped: no GPU (job runs on CPU)"}
            for i, s in enumerate([0.5, 0.9, 0.97, 0.99], 1)]
    errors = Console(width=80, record=True, file=io.StringIO())
    monkeypatch.setattr(render, "err", errors)
    narrow = _render(monkeypatch, 80, jobs, columns=STATUS_COLUMNS, optional=STATUS_OPTIONAL)
    assert "│ succeeded │" in narrow and "│ 0.970 " in narrow  # no word or number broken
    assert "worker" not in narrow and max(len(line) for line in narrow.splitlines()) <= 80
    assert "left out for the terminal's width: worker" in errors.export_text()
    wide = _render(monkeypatch, 250, jobs, columns=STATUS_COLUMNS, optional=STATUS_OPTIONAL)
    assert "worker" in wide and "vm/4026531836:25981" in wide  # room enough: every column


JOBS = [{"job_id": i, "status": "succeeded", "model": "tiny", "dataset": "synthetic", "sparsity": s,
         "scheme": scheme, "bits": bits, "device": "cpu", "stage": None, "progress": 1.0, "attempts": 1,
         "worker": None, "message": "benchmark skipped: no GPU (job runs on CPU); the GPU queue runs it"}
        for i, (s, scheme, bits) in enumerate([(0.5, "fp32", 32), (0.98, "fp32", 32), (0.98, "kmeans", 4)], 1)]


def test_a_long_message_is_cut_to_one_line_and_empty_columns_go_first(monkeypatch):
    """At 80 columns `farm status` wrapped each message over four lines and left out scheme and
    bits, so an fp32 and a 4-bit job of the same sparsity looked alike (a new-user walkthrough)."""
    from farm.cli.app import STATUS_COLUMNS, STATUS_OPTIONAL

    errors = Console(width=80, record=True, file=io.StringIO())
    monkeypatch.setattr(render, "err", errors)
    narrow = _render(monkeypatch, 80, JOBS, columns=STATUS_COLUMNS, optional=STATUS_OPTIONAL, clip=("message",))
    lines = narrow.splitlines()
    assert len([line for line in lines if line.startswith("│")]) == len(JOBS), narrow  # one line a job
    assert "│ kmeans " in narrow and "…" in narrow
    assert max(len(line) for line in lines) <= 80
    assert "left out for the terminal's width: worker," in errors.export_text()  # empty: first to go
    wide = _render(monkeypatch, 250, JOBS, columns=STATUS_COLUMNS, optional=STATUS_OPTIONAL, clip=("message",))
    assert "the GPU queue runs it" in wide  # room enough: the whole message


def test_headers_wrap_between_words(monkeypatch):
    from farm.cli.app import RESULT_OPTIONAL

    narrow = _render(monkeypatch, 80, [ROW, {**ROW, "job_id": 2}], optional=RESULT_OPTIONAL)
    assert "compression" in narrow and "compression_rat" not in narrow and "speedup" in narrow


def test_piped_output_takes_its_width_from_columns(monkeypatch):
    class Piped(io.StringIO):
        def isatty(self):
            return False

    monkeypatch.setenv("COLUMNS", "80")
    assert render._width(Piped(), 200) == 80
    monkeypatch.setenv("COLUMNS", "")
    assert render._width(Piped(), 200) == 200


def test_even_the_narrowest_too_wide_folds_every_column_alike(monkeypatch):
    """At 60 columns the clipped message kept its width and every other column went to nothing."""
    from farm.cli.app import STATUS_COLUMNS, STATUS_OPTIONAL

    monkeypatch.setattr(render, "err", Console(width=60, file=io.StringIO()))
    narrow = _render(monkeypatch, 60, JOBS, columns=STATUS_COLUMNS, optional=STATUS_OPTIONAL, clip=("message",))
    assert "│ 1 " in narrow and "│ 3 " in narrow and max(len(line) for line in narrow.splitlines()) <= 60
    assert len([line for line in narrow.splitlines() if line.startswith("│")]) == len(JOBS)  # message cut shorter


def test_a_short_header_gets_its_line_before_long_cells_get_room(monkeypatch):
    from farm.cli.app import STATUS_COLUMNS, STATUS_OPTIONAL

    monkeypatch.setattr(render, "err", Console(width=80, file=io.StringIO()))
    narrow = _render(monkeypatch, 80, JOBS, columns=STATUS_COLUMNS, optional=STATUS_OPTIONAL, clip=("message",))
    assert "┃ job id ┃" in narrow


def test_progress_is_a_percentage_rounded_down_in_tables_and_fields(monkeypatch):
    rows = [{**JOBS[0], "progress": 0.996, "status": "running"}, {**JOBS[1], "progress": None}]
    wide = _render(monkeypatch, 250, rows, columns=["job_id", "status", "progress"])
    assert "│ 99%      │" in wide and "100%" not in wide
    fields = io.StringIO()
    monkeypatch.setattr(render, "out", Console(width=100, record=True, file=fields))
    render.record({"job_id": 1, "progress": 0.25, "spec": {"a": 1, "b": [1, 2]}}, Format.table)
    text = render.out.export_text()
    assert "│ 25%  " in text and '{"a": 1, "b": [1, 2]}' in text  # JSON cells spaced: they wrap between items


def test_a_title_is_its_own_line_with_no_trailing_spaces(monkeypatch):
    shown = _render(monkeypatch, 120, [ROW, {**ROW, "job_id": 2}], title="results")
    assert shown.splitlines()[0] == "results" and not any(line.endswith(" ") for line in shown.splitlines())


def test_booleans_are_yes_no_in_tables_and_stay_booleans_in_csv(monkeypatch, capsys):
    render.record({"job_id": 1, "cancel_requested": False}, Format.csv)
    assert "cancel_requested,False" in capsys.readouterr().out  # as pandas reads it
    shown = _render(monkeypatch, 80, [{"job_id": 1, "cancel_requested": False}, {"job_id": 2, "cancel_requested": True}])
    assert "│ no " in shown and "│ yes " in shown


def test_markdown_is_the_tables_columns_with_its_cells(capsys):
    render.rows([ROW, {**ROW, "job_id": 2, "message": "a | b"}], Format.markdown,
                columns=["job_id", "accuracy", "compressed_bytes", "best_speedup_fp32", "message"], title="results")
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["**results**", "", "| job_id | accuracy | compressed_bytes | best_speedup_fp32 | message |",
                         "|---|---|---|---|---|"]
    assert lines[4].startswith("| 1 | 93.81% |") and lines[4].endswith("| - |")
    assert lines[5].endswith("| a \\| b |")  # a pipe in a cell does not split it
