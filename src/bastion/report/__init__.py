"""bastion.report: the self-contained HTML report and `summary.json` of a stored audit run."""

from bastion.report.html import render, write_report
from bastion.report.summary import METRICS, metric_names, metric_value, summarize

__all__ = ["METRICS", "metric_names", "metric_value", "render", "summarize", "write_report"]
