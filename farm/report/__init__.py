"""Results people can see: compare tables, Pareto fronts, per-layer speedup charts, crossover
maps and a self-contained HTML report, all read from the results database (farm.db).

    from farm import db
    from farm.report import compare_sweep, write_report
    with db.session() as s:
        table = compare_sweep(s, 3)
        write_report(s, 3, "report.html")

Plotting needs matplotlib only when a figure is drawn; the table code never imports it.
"""

from farm.report.compare import CompareRow, Comparison, compare_jobs, compare_sweep
from farm.report.crossover import Crossover, crossovers
from farm.report.errors import NothingToShow
from farm.report.pareto import XAxis, YAxis, front_indices, panels

__all__ = ["CompareRow", "Comparison", "Crossover", "NothingToShow", "XAxis", "YAxis", "compare_jobs",
           "compare_sweep", "crossovers", "front_indices", "panels", "write_report", "build_report"]


def __getattr__(name: str):
    # The HTML report pulls in matplotlib: import it only when asked for.
    if name in ("write_report", "build_report"):
        from farm.report import document

        return getattr(document, name)
    raise AttributeError(name)
