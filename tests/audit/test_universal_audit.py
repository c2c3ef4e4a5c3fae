"""Universal perturbations in an audit: the papers' held-out numbers are stored as metrics (so
`bastion check` can bound them), shown in their own table and summed up in a scorecard card."""

from __future__ import annotations

import html
import json
from pathlib import Path

from typer.testing import CliRunner

from bastion.cli.app import app
from bastion.report import pct
from bastion.store import Store

DIGITS = Path(__file__).resolve().parents[1] / "fixtures" / "small_cnn-digits.safetensors"
PLAN = """\
name: universal
n: 60
seed: 1
scenarios:
  - attack: fgsm
    eps: 0.3
  - attack: uap
    eps: 0.3
    params: {max_passes: 1}
  - attack: fg-uap
    eps: 0.3
    params: {epochs: 5, batch_size: 8}
"""
runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_universal_scenarios_store_report_and_gate_the_papers_numbers(tmp_path: Path) -> None:
    plan, out, db = tmp_path / "universal.yaml", tmp_path / "report", f"sqlite:///{tmp_path / 'r.db'}"
    plan.write_text(PLAN)
    code, stdout, stderr = run("audit", "-c", DIGITS, "--plan", plan, "--db", db, "-o", out, "-q")
    assert code == 0, stderr
    with Store(db) as store:
        fgsm, uap, fg = store.run(1).results
    assert "fooling_rate_heldout" not in fgsm.metrics  # a per-image attack has no universal numbers
    for r in (uap, fg):
        e, m, per = r.record["extra"], r.metrics, r.record["per_sample"]
        held = e["heldout_index"]
        assert m["fooling_rate_heldout"] == e["fooling_rate_heldout"] and e["n_heldout"] == len(held) == 30
        # the stored accuracy under v is the one the per-image records give on the held-out images
        assert m["accuracy_under_v_heldout"] == sum(per["y_adv"][i] == per["y"][i] for i in held) / 30
        assert 0 < m["fooling_rate_heldout"] < 1
    worst = min((uap, fg), key=lambda r: r.metrics["accuracy_under_v_heldout"])

    summary = json.loads((out / "summary.json").read_text())
    card = next(c for c in summary["scorecard"] if c["family"] == "universal perturbation")
    assert card["headline"] == worst.metrics["accuracy_under_v_heldout"] and card["worst"] == worst.key
    assert f"changed the prediction of {pct(worst.metrics['fooling_rate_heldout'])}" in card["sentence"]
    page = html.unescape((out / "report.html").read_text())
    assert "Universal perturbations: one v per scenario" in page and "under v (held-out)" in page

    acc = uap.metrics["accuracy_under_v_heldout"]
    code, stdout, _ = run("check", "1", "--min", f"accuracy_under_v_heldout.uap={acc}", "--db", db)
    assert code == 0 and "ok   accuracy_under_v_heldout.uap" in stdout
    fr = fg.metrics["fooling_rate_heldout"]
    code, stdout, _ = run("check", "1", "--max", f"fooling_rate_heldout.fg-uap={fr - 0.01}", "--db", db)
    assert code == 1 and "FAIL fooling_rate_heldout.fg-uap" in stdout
    code, _, stderr = run("check", "1", "--max", "fooling_rate_heldout.fgsm=0.5", "--db", db)
    assert code == 2 and "no metric 'fooling_rate_heldout.fgsm'" in stderr
