"""The report's plots, drawn with matplotlib (Agg) and inlined as SVG so the report needs no network."""

from __future__ import annotations

import io
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen; must precede pyplot
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["plots"]

_STYLE = {
    "figure.figsize": (6.0, 3.6),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
    "svg.hashsalt": "bastion",  # the same data give the same SVG bytes
}


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg") :]  # drop the XML prologue and doctype: the SVG sits inside HTML
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)  # the RDF block says nothing here


def _robust_vs_eps(curves: dict[str, list[list[float]]]) -> str:
    norms = sorted({label.rsplit("(", 1)[1].rstrip(")") for label in curves})
    fig, axes = plt.subplots(1, len(norms), squeeze=False, figsize=(6.0 if len(norms) == 1 else 9.0, 3.6))
    for ax, norm in zip(axes[0], norms, strict=True):
        for label, points in sorted(curves.items()):
            if not label.endswith(f"({norm})"):
                continue
            eps, acc = zip(*points, strict=True)
            ax.plot(eps, [100 * a for a in acc], marker="o", label=label.rsplit(" (", 1)[0])
        ax.set_xlabel(f"ε ({'L∞' if norm == 'linf' else 'L2'})")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.legend(frameon=False)
    return _svg(fig)


def _vs_queries(curves: dict[str, dict[str, Any]], field: str, ylabel: str, percent: bool) -> str:
    fig, ax = plt.subplots()
    for key, c in sorted(curves.items()):
        ys = [None if v is None else (100 * v if percent else v) for v in c[field]]
        pts = [(q, v) for q, v in zip(c["queries"], ys, strict=True) if v is not None]
        if pts:
            qs, vs = zip(*pts, strict=True)
            ax.plot(qs, vs, marker="o", label=key)
    ax.set_xscale("log")
    ax.set_xlabel("queries per image")
    ax.set_ylabel(ylabel)
    if percent:
        ax.set_ylim(-2, 102)
    ax.legend(frameon=False)
    return _svg(fig)


def plots(curves: dict[str, Any]) -> list[dict[str, str]]:
    """The plots a summary's curves allow: [{"id", "title", "caption", "svg"}], skipping those with no data."""
    out = []
    with plt.rc_context(_STYLE):
        if curves["robust_vs_eps"]:
            out.append(
                {
                    "id": "robust-vs-eps",
                    "title": "Robust accuracy vs ε",
                    "caption": "Share of the audited images still classified correctly as the attacker's budget grows.",
                    "svg": _robust_vs_eps(curves["robust_vs_eps"]),
                }
            )
        if curves["success_vs_queries"]:
            out.append(
                {
                    "id": "success-vs-queries",
                    "title": "Success rate vs queries",
                    "caption": "Share of the correctly classified images a query attack has fooled within a budget.",
                    "svg": _vs_queries(curves["success_vs_queries"], "success_rate", "success rate (%)", True),
                }
            )
        if curves["distance_vs_queries"]:
            out.append(
                {
                    "id": "distance-vs-queries",
                    "title": "Median perturbation vs queries",
                    "caption": "Median distance of the best adversarial input a decision-based attack holds "
                    "after each budget (lower is a stronger attack).",
                    "svg": _vs_queries(curves["distance_vs_queries"], "median", "median distance", False),
                }
            )
    return out
