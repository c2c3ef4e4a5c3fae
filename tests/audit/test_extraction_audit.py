"""The `extraction` kind end to end: a plan's extraction scenarios are stored with their metrics and
curves, reported (card, table, fidelity-vs-queries plot), gated by `bastion check`, and `bastion extract`
gives the audit's numbers; mistakes are one line before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.audit import parse_plan
from bastion.cli.app import app
from bastion.core.errors import ConfigError
from bastion.store import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DIGITS = FIXTURES / "small_cnn-digits.safetensors"

PLAN = """\
scenarios:
  - attack: knockoff
    n: 200
    params: {budget: 300, epochs: 3, curve_points: 2, transfer_n: 50}
  - attack: knockoff
    n: 200
    output: label
    defenses: [reverse-sigmoid]
    params: {budget: 200, epochs: 2, curve_points: 1, transfer_n: 0, policy: adaptive}
  - attack: jbda
    n: 200
    params: {seeds: 20, rounds: 3, budget: 80, epochs: 3, transfer_n: 0}
"""


def test_extraction_scenarios_store_report_gate_and_match_the_command(tmp_path: Path) -> None:
    plan = tmp_path / "steal.yaml"
    plan.write_text(PLAN)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    runner = CliRunner()
    audit = runner.invoke(
        app, ["audit", "-c", str(DIGITS), "--plan", str(plan), "--db", url, "-o", str(tmp_path / "r")]
    )
    assert audit.exit_code == 0, audit.stderr
    with Store(url) as store:
        probs, label, jbda = store.run(1).results
    assert probs.family == label.family == jbda.family == "extraction"
    assert [probs.key, label.key, jbda.key] == ["knockoff", "knockoff-label+reverse-sigmoid", "jbda"]
    m = probs.metrics
    assert m["queries"] == 300 and [p["queries"] for p in probs.record["curve"]] == [150, 300]
    assert m["fidelity"] == probs.record["fidelity"] and 0 <= m["fidelity"] <= 1
    assert m["transfer_success_rate"] is not None and probs.record["transfer"]["n"] <= 50
    assert probs.record["transfer_set"]["pool"] == "digits" and probs.record["surrogate"]["architecture"] == "small_cnn"
    assert label.metrics["queries"] == 200 and label.record["defenses"] == ["reverse-sigmoid"]
    assert label.record["output"] == "label" and label.metrics["transfer_success_rate"] is None
    assert jbda.record["transfer_set"]["pool"] == "heldout" and jbda.metrics["queries"] == 60  # 20 -> 40 -> 80
    html = (tmp_path / "r" / "report.html").read_text()
    assert 'id="extraction"' in html and 'id="extraction-curves"' in html and "model extraction" in html
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert set(summary["curves"]["extraction"]["fidelity"]) == {"knockoff", "knockoff-label+reverse-sigmoid", "jbda"}
    gate = ["check", "1", "--db", url, "--max", "fidelity.knockoff=1.0", "--max", "queries.jbda=60"]
    assert runner.invoke(app, gate).exit_code == 0
    failed = runner.invoke(app, ["check", "1", "--db", url, "--max", "fidelity.knockoff=0.0"])
    assert failed.exit_code == 1
    out = tmp_path / "e.json"
    cli = runner.invoke(
        app,
        ["extract", "budget=300", "epochs=3", "curve_points=2", "transfer_n=50", "-c", str(DIGITS), "--n", "200",
         "--json", str(out), "-q"],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert "model extraction on small_cnn-digits.safetensors: 300 of 300 queries answering probs" in cli.stdout
    record = json.loads(out.read_text())["scenarios"][0]
    assert {k: v for k, v in record["metrics"].items() if k != "seconds"} == {
        k: v for k, v in m.items() if k != "seconds"
    }
    budget = runner.invoke(
        app, ["extract", "--attack", "jbda", "--budget", "30", "seeds=10", "epochs=1", "rounds=4", "transfer_n=0",
              "--output", "label", "-c", str(DIGITS), "--n", "100", "-q"],
    )  # fmt: skip
    assert budget.exit_code == 0, budget.stderr
    assert "30 of 30 queries answering label, pool heldout" in budget.stdout
    ood = runner.invoke(
        app, ["extract", "--pool", "ood", "--ood-data", "digits", "--output", "top-k", "--k", "2", "budget=40",
              "epochs=1", "transfer_n=0", "-c", str(DIGITS), "--n", "100", "--json", str(out), "-q"],
    )  # fmt: skip
    assert ood.exit_code == 0, ood.stderr
    steal = json.loads(out.read_text())["scenarios"][0]
    assert steal["key"] == "knockoff-top2" and steal["record"]["output"] == "top-2"
    assert steal["record"]["transfer_set"] == {"pool": "ood", "source": "digits training split", "pool_size": 1438}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["extract", "--attack", "pgd"], "unknown extraction attack 'pgd' ('pgd' is in the evasion family)"),
        (["extract", "budget=0"], "knockoff: budget must be >= 1; got 0"),
        (["extract", "--budget", "5", "budget=5"], "give the budget once"),
        (["extract", "--output", "logits"], "the API's output must be one of probs, label, top-k"),
        (["extract", "--output", "top-k"], "top-k output needs k >= 1"),
        (["extract", "--pool", "imagenet"], "pool must be one of digits, ood, heldout"),
        (["extract", "--pool", "ood"], "draws from the second data set: give --ood-data"),
        (["extract", "--defense", "nope"], "unknown postprocess defense 'nope'"),
        (["extract", "--n", "0"], "--n must be at least 1"),
        (["extract", "--attack", "jbda", "--n", "350"], "needs 150 heldout test images after the first 350"),
        (["attack", "knockoff"], "run it with `bastion extract --attack knockoff`"),
    ],
)
def test_extract_command_errors_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*args, "-c", str(DIGITS)])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  - attack: knockoff\n    output: logits\n", "line 3: the API's output must be one of"),
        ("  - attack: knockoff\n    pool: web\n", "line 3: pool must be one of"),
        ("  - attack: jbda\n    params: {rounds: 0}\n", "line 3: scenario 1: jbda: rounds must be >= 1"),
        ("  - attack: knockoff\n    eps: 0.3\n", "line 3: unknown field 'eps' in scenario 1"),
    ],
)
def test_plan_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("`", ".")):
        parse_plan("scenarios:\n" + text)
