"""bastion.report: the self-contained HTML report and `summary.json` of a stored audit run."""

from bastion.report.html import render, write_report
from bastion.report.sections import Card, Figure, Level, Presenter, Section, Table, format_metric, level_of, pct
from bastion.report.summary import by_family, metric_names, metric_value, summarize

__all__ = [
    "Card",
    "Figure",
    "Level",
    "Presenter",
    "Section",
    "Table",
    "by_family",
    "format_metric",
    "level_of",
    "metric_names",
    "metric_value",
    "pct",
    "render",
    "summarize",
    "write_report",
]
