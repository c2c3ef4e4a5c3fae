"""The self-contained HTML report of a stored run (Jinja2; plots as inline SVG, images as data URIs)
and its `summary.json`. Each family's section comes from its presenter (the audit's scenario kinds);
a family with no presenter still gets a table of its stored metrics."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from PIL import Image

from bastion._atomic import atomic_path, write_json
from bastion.report.sections import Presenter, Section, Table, format_metric, pct
from bastion.report.summary import by_family, summarize
from bastion.store import ResultRow, RunRow, Store

__all__ = ["TEMPLATES", "render", "run_context", "write_report"]

TEMPLATES = PackageLoader(
    "bastion.report", "templates"
)  # the dashboard loads `_run.html.j2` and `_style.css.j2` from here
_ENV = Environment(
    loader=TEMPLATES,
    autoescape=select_autoescape(["html", "j2"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _gallery(results: Sequence[ResultRow]) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    for r in results:
        items = []
        for a in r.artifacts:
            if a.mime != "image/png":
                continue
            with Image.open(io.BytesIO(a.data)) as im:
                width, height = im.size
            src = "data:image/png;base64," + base64.b64encode(a.data).decode("ascii")
            items.append({"src": src, "caption": a.caption, "width": width, "height": height})
        if items:
            out.append((r.key, items))
    return out


def _generic_section(family: str, results: Sequence[ResultRow]) -> Section:
    """The stored metrics of a family this version does not know how to present."""
    names = list(dict.fromkeys(k for r in results for k in r.metrics))
    rows = [[r.key, r.method, *(format_metric(k, r.metrics.get(k)) for k in names)] for r in results]
    table = Table(["scenario", "method", *names], rows, [False, False, *([True] * len(names))])
    return Section(id=family, title=family, intro=f"Scenarios of the {family} family, as stored.", tables=[table])


def _model_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    keys = ("architecture", "arch_kwargs", "dataset", "split_seed", "train_n", "num_classes", "input_shape", "recipe")
    rows = [(k.replace("_", " "), _plain(meta[k])) for k in keys if meta.get(k) not in (None, {}, ())]
    if meta.get("clean_accuracy") is not None:
        rows.append(("clean accuracy at training", pct(meta["clean_accuracy"])))
    if meta.get("factory"):
        rows.append(("factory", meta["factory"]))
    rows += [(f"training event: {e.get('kind', 'event')}", _plain(e)) for e in meta.get("events", ())]
    if meta.get("created"):
        rows.append(("created", str(meta["created"])))
    return rows


def _plain(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def run_context(
    run: RunRow, presenters: Mapping[str, Presenter], summary: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the template `_run.html.j2` needs to show `run` (the report's body; the dashboard includes the
    same template with this context, so a run looks the same in both)."""
    s = summary if summary is not None else summarize(run, presenters)
    r = s["run"]
    run_rows = [
        ("plan", f"{r['plan']} (sha256 {r['plan_sha256'][:16]}…)"),
        ("data", f"{r['data']} (split seed {r['split_seed']}, first {r['samples']} test images)"),
        ("seed", str(r["seed"])),
        ("versions", ", ".join(f"{k} {v}" for k, v in r["versions"].items())),
        ("device", r["device"]),
        ("host", r["host"]),
        ("started", r["started_at"]),
        ("ended", r["ended_at"] or "unfinished"),
    ]
    sections = []
    for family, results in by_family(run).items():
        if family in presenters:
            section = presenters[family].section(results, s["curves"][family])
        else:
            section = _generic_section(family, results)
        sections.append((section, _gallery(results)))
    warnings = [(sc["key"], w) for sc in s["scenarios"] for w in sc["warnings"]]
    return {
        "s": s,
        "sections": sections,
        "warnings": warnings,
        "model_rows": _model_rows(s["model"]["meta"]),
        "run_rows": run_rows,
        "pct": pct,
    }


def render(run: RunRow, presenters: Mapping[str, Presenter], summary: dict[str, Any] | None = None) -> str:
    """The report of `run` as one HTML document."""
    return _ENV.get_template("report.html.j2").render(**run_context(run, presenters, summary))


def write_report(
    store: Store, run_id: int, out: str | Path, presenters: Mapping[str, Presenter]
) -> tuple[Path, dict[str, Any]]:
    """Write `report.html` and `summary.json` of run `run_id` into folder `out` (atomically); return the
    HTML file's path and the summary."""
    run = store.run(run_id)
    summary = summarize(run, presenters)
    folder = Path(out)
    html = render(run, presenters, summary)
    path = folder / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    write_json(folder / "summary.json", summary)
    return path, summary
