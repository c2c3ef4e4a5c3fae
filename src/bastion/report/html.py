"""The self-contained HTML report of a stored run (Jinja2; plots as inline SVG, images as data URIs)
and its `summary.json`."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from PIL import Image

from bastion._atomic import atomic_path, write_json
from bastion.report.plots import plots
from bastion.report.summary import summarize
from bastion.store import RunRow, Store

__all__ = ["render", "write_report"]

_ENV = Environment(
    loader=PackageLoader("bastion.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def _gallery(run: RunRow) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    for r in run.results:
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


def _model_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    keys = ("architecture", "arch_kwargs", "dataset", "split_seed", "num_classes", "input_shape", "recipe")
    rows = [(k.replace("_", " "), _plain(meta[k])) for k in keys if meta.get(k) not in (None, {}, ())]
    if meta.get("clean_accuracy") is not None:
        rows.append(("clean accuracy at training", _pct(meta["clean_accuracy"])))
    if meta.get("factory"):
        rows.append(("factory", meta["factory"]))
    rows += [(f"training event: {e.get('kind', 'event')}", _plain(e)) for e in meta.get("events", ())]
    if meta.get("created"):
        rows.append(("created", str(meta["created"])))
    return rows


def _plain(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def render(run: RunRow, summary: dict[str, Any] | None = None) -> str:
    """The report of `run` as one HTML document."""
    s = summary if summary is not None else summarize(run)
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
    warnings = [(sc["key"], w) for sc in s["scenarios"] for w in sc["warnings"]]
    return _ENV.get_template("report.html.j2").render(
        s=s,
        plots=plots(s["curves"]),
        gallery=_gallery(run),
        warnings=warnings,
        model_rows=_model_rows(s["model"]["meta"]),
        run_rows=run_rows,
        pct=_pct,
        num=_num,
    )


def write_report(store: Store, run_id: int, out: str | Path) -> tuple[Path, dict[str, Any]]:
    """Write `report.html` and `summary.json` of run `run_id` into folder `out` (atomically); return the
    HTML file's path and the summary."""
    run = store.run(run_id)
    summary = summarize(run)
    folder = Path(out)
    html = render(run, summary)
    path = folder / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    write_json(folder / "summary.json", summary)
    return path, summary
