"""Commands over stored runs: `bastion report`, `bastion compare` and the CI gate `bastion check`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bastion.audit import presenters
from bastion.cli._common import out
from bastion.core.errors import ConfigError, did_you_mean
from bastion.report import compare as compare_summaries
from bastion.report import format_metric as _fmt
from bastion.report import metric_names, metric_value, summarize, write_report
from bastion.store import DEFAULT_URL, Store

DbOpt = Annotated[
    str | None,
    typer.Option("--db", help=f"results database URL (default $BASTION_DB or {DEFAULT_URL})", show_default=False),
]


def open_store(db: str | None) -> Store:
    """The store at `--db`, else `$BASTION_DB`, else `bastion.db` in the working folder."""
    return Store(db or os.environ.get("BASTION_DB") or DEFAULT_URL)


def report(
    run_id: Annotated[int, typer.Argument(help="the run's id (printed by `bastion audit`)")],
    db: DbOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="report folder (default runs/run-ID)", show_default=False)
    ] = None,
) -> None:
    """Write the HTML report and summary.json of a stored run."""
    folder = out_dir if out_dir is not None else Path("runs") / f"run-{run_id}"
    with open_store(db) as store:
        html, _ = write_report(store, run_id, folder, presenters())
    out.print(f"report: {html}", highlight=False)


def compare(
    run_a: Annotated[int, typer.Argument(help="the first run's id")],
    run_b: Annotated[int, typer.Argument(help="the second run's id")],
    db: DbOpt = None,
) -> None:
    """Print two runs' numbers side by side with their differences (B - A)."""
    with open_store(db) as store:
        a, b = summarize(store.run(run_a), presenters()), summarize(store.run(run_b), presenters())
    diff = compare_summaries(a, b)
    table = Table(title=f"run {run_a} ({a['model']['name']}) vs run {run_b} ({b['model']['name']})")
    for col in ("metric", f"run {run_a}", f"run {run_b}", "B - A"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for d in diff.rows:
        sign = "" if d.delta is None or d.delta <= 0 else "+"
        table.add_row(
            d.name,
            _fmt(d.name, d.a),
            _fmt(d.name, d.b),
            "–" if d.delta is None else sign + _fmt(d.name, d.delta),
        )
    only = sorted(diff.only_a + diff.only_b)
    out.print(table)
    if only:
        out.print(f"scenarios in one run only: {', '.join(only)}", highlight=False)
    if not diff.rows:
        out.print("the two runs share no scenario", highlight=False)


def _bound(text: str, option: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise ConfigError(f"{option} takes METRIC=NUMBER, e.g. robust_accuracy.pgd=0.8; got {text!r}") from None


def check(
    run_id: Annotated[int, typer.Argument(help="the run's id")],
    minimum: Annotated[
        list[str] | None,
        typer.Option("--min", help="lower bound METRIC=NUMBER, e.g. robust_accuracy.pgd=0.8 (repeatable)"),
    ] = None,
    maximum: Annotated[
        list[str] | None,
        typer.Option("--max", help="upper bound METRIC=NUMBER, e.g. seconds.autoattack=600 (repeatable)"),
    ] = None,
    db: DbOpt = None,
) -> None:
    """A CI gate: exit 1 when a stored run's number breaks a bound, 0 when all hold.

    Metrics are `clean_accuracy` and METRIC.SCENARIO, where each scenario kind stores its own METRICs
    (evasion: robust_accuracy, success_rate, l2_median, ...; membership: auroc, tpr_at_fpr_1e-3, ...;
    ood: auroc, fpr95, ...; docs/audits.md lists them). A wrong name is answered with the closest one.
    """
    bounds = [(*_bound(t, "--min"), ">=") for t in minimum or []] + [(*_bound(t, "--max"), "<=") for t in maximum or []]
    if not bounds:
        raise ConfigError("give at least one bound: --min METRIC=NUMBER or --max METRIC=NUMBER")
    with open_store(db) as store:
        summary = summarize(store.run(run_id), presenters())
    known = metric_names(summary)
    for name, _, _ in bounds:
        if name not in known:
            raise ConfigError(f"run {run_id} has no metric {name!r}.{did_you_mean(name, known)}")
    failed = 0
    for name, limit, op in bounds:
        value = metric_value(summary, name)
        ok = value is not None and (value >= limit if op == ">=" else value <= limit)
        failed += not ok
        out.print(
            f"{'ok  ' if ok else 'FAIL'} {name} = {_fmt(name, value)} (bound {op} {_fmt(name, limit)})",
            highlight=False,
        )
    if failed:
        out.print(f"{failed} of {len(bounds)} bound(s) failed", highlight=False)
        raise typer.Exit(1)
    out.print(f"all {len(bounds)} bound(s) hold", highlight=False)
