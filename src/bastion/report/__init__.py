"""bastion.report: the self-contained HTML report and `summary.json` of a stored audit run."""

from bastion.report.html import TEMPLATES, render, run_context, write_report
from bastion.report.sections import Card, Figure, Level, Presenter, Section, Table, format_metric, level_of, pct
from bastion.report.summary import Comparison, Delta, by_family, compare, metric_names, metric_value, summarize

__all__ = [
    "TEMPLATES",
    "Card",
    "Comparison",
    "Delta",
    "Figure",
    "Level",
    "Presenter",
    "Section",
    "Table",
    "by_family",
    "compare",
    "format_metric",
    "level_of",
    "metric_names",
    "metric_value",
    "pct",
    "render",
    "run_context",
    "summarize",
    "write_report",
]
