"""The report's plot primitives, drawn with matplotlib (Agg) and inlined as SVG so the report needs no
network: line charts in one or more panels, and ROC curves (log-log by default, as the
membership-inference literature plots them: the low-FPR corner is where an attack matters)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import matplotlib

matplotlib.use("Agg")  # no screen; must precede pyplot
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["Panel", "lines", "roc", "timeline"]

_STYLE = {
    "figure.figsize": (6.0, 3.6),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
    "svg.hashsalt": "bastion",  # the same data give the same SVG bytes
}


@dataclass(frozen=True)
class Panel:
    """One set of axes: a line per series, each a list of (x, y) points (None y values are skipped)."""

    xlabel: str
    ylabel: str
    series: dict[str, Sequence[tuple[float, float | None]]]
    percent: bool = False  # y values are shares in [0, 1], drawn as percentages
    xlog: bool = False
    markers: bool = True


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg") :]  # drop the XML prologue and doctype: the SVG sits inside HTML
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)  # the RDF block says nothing here


def lines(panels: Sequence[Panel]) -> str:
    """Panels side by side, as one SVG."""
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(6.0 if len(panels) == 1 else 9.0, 3.6))
        for ax, panel in zip(axes[0], panels, strict=True):
            for label, points in sorted(panel.series.items()):
                pts = [(x, y) for x, y in points if y is not None]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                ys = tuple(100 * y for y in ys) if panel.percent else ys
                ax.plot(xs, ys, marker="o" if panel.markers else None, label=label)
            if panel.xlog:
                ax.set_xscale("log")
            ax.set_xlabel(panel.xlabel)
            ax.set_ylabel(panel.ylabel)
            if panel.percent:
                ax.set_ylim(-2, 102)
            ax.legend(frameon=False)
        return _svg(fig)


def roc(curves: dict[str, tuple[Sequence[float], Sequence[float]]], *, log: bool = True, floor: float = 1e-3) -> str:
    """ROC curves (FPR on x, TPR on y) with the chance diagonal; on log-log axes from `floor` (the smallest
    FPR the negatives can resolve) to 1 when `log`."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.6, 4.0))
        for label, (fpr, tpr) in sorted(curves.items()):
            ax.plot(fpr, tpr, label=label)  # the corners of the ROC staircase: straight lines between them
        lo = floor if log else 0.0
        ax.plot([lo, 1], [lo, 1], linestyle=":", color="grey", label="chance")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlim(lo, 1)
        ax.set_ylim(lo, 1.02 if not log else 1.05)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(frameon=False, fontsize=8)
        return _svg(fig)


def timeline(series: dict[str, Sequence[tuple[datetime, float | None]]], *, ylabel: str) -> str:
    """Shares in [0, 1] over time, one line per series (drawn as percentages; None values are skipped):
    a model's numbers across its audit runs."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        for label, points in sorted(series.items()):
            pts = [(t, 100 * y) for t, y in points if y is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", label=label.replace("$", r"\$"))  # a `$` would start mathtext
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_ylim(-2, 102)
        ax.set_xlabel("run started (UTC)")
        ax.set_ylabel(ylabel)
        ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        return _svg(fig)
