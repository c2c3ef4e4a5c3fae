"""The `split-extraction` kind end to end: a plan's scenarios are stored with their metrics, reported
(card, table, fidelity-vs-budget plot), gated by `bastion check`, and `bastion sfl-extract` gives the
audit's numbers; the checkpoint is never changed; mistakes are one line before anything runs."""

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
  - attack: gm-me
    n: 200
    aux: train
    aux_n: 100
    params: {budget: 300, epochs: 3, flip: false}
  - attack: train-me
    n: 200
    own: 0.2
    params: {epochs: 10, flip: false}
  - attack: craft-me
    name: craft-small
    n: 200
    server_layers: 2
    params: {budget: 100, epochs: 3}
"""


def test_split_extraction_scenarios_store_report_gate_and_match_the_command(tmp_path: Path) -> None:
    plan = tmp_path / "sfl.yaml"
    plan.write_text(PLAN)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    before = DIGITS.read_bytes()
    runner = CliRunner()
    audit = runner.invoke(
        app, ["audit", "-c", str(DIGITS), "--plan", str(plan), "--db", url, "-o", str(tmp_path / "r")]
    )
    assert audit.exit_code == 0, audit.stderr
    with Store(url) as store:
        gm, train, craft = store.run(1).results
    assert gm.family == train.family == craft.family == "split-extraction"
    assert gm.metrics["queries"] == 300 and train.metrics["queries"] == 0 and craft.metrics["queries"] == 100
    assert gm.record["server_layers"] == 3 and craft.record["server_layers"] == 2
    assert train.record["attacker"]["own"] == round(0.2 * _members())
    assert gm.record["attacker"] == {"own": 0, "aux": "train", "aux_n": 100}
    for r in (gm, train, craft):
        m = r.metrics
        assert set(m) == {"accuracy", "fidelity", "victim_accuracy", "gap", "random_accuracy", "queries", "seconds"}
        assert m["gap"] == pytest.approx(m["victim_accuracy"] - m["accuracy"]) and m["victim_accuracy"] > 0.8
    assert train.metrics["accuracy"] > train.metrics["random_accuracy"] + 0.3
    html = (tmp_path / "r" / "report.html").read_text()
    assert 'id="split-extraction"' in html and 'id="split-extraction-fidelity"' in html
    assert "split-learning extraction" in html and "untrained copy acc." in html
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert set(summary["curves"]["split-extraction"]["fidelity"]) == {"gm-me", "train-me", "craft-me"}
    gate = ["check", "1", "--db", url, "--min", "accuracy.train-me=0.3", "--max", "queries.gm-me=300"]
    assert runner.invoke(app, gate).exit_code == 0
    assert runner.invoke(app, ["check", "1", "--db", url, "--min", "fidelity.gm-me=1.01"]).exit_code == 1
    cli = runner.invoke(
        app,
        ["sfl-extract", "epochs=3", "flip=false", "--attack", "gm-me", "--budget", "300", "--aux", "train",
         "--aux-n", "100", "-c", str(DIGITS), "--n", "200", "--json", str(tmp_path / "s.json"), "-q"],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert "split-learning extraction on small_cnn-digits.safetensors: server holds 3 of 6 layers" in cli.stdout
    assert "300 gradient queries answered" in cli.stdout
    record = json.loads((tmp_path / "s.json").read_text())["scenarios"][0]
    assert {k: v for k, v in record["metrics"].items() if k != "seconds"} == {
        k: v for k, v in gm.metrics.items() if k != "seconds"
    }
    assert DIGITS.read_bytes() == before


def _members() -> int:
    from bastion.cli._target import ModelSource

    return ModelSource(checkpoint=DIGITS).target().n_members


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sfl-extract", "--attack", "pgd"], "unknown split-extraction attack 'pgd' ('pgd' is in the evasion family)"),
        (["sfl-extract", "--attack", "gm-me", "--budget", "-1"], "gm-me: budget must be >= 0; got -1"),
        (["sfl-extract", "--attack", "craft-me", "steps=3"], "craft-me has no parameter 'steps'"),
        (["sfl-extract", "--own", "1.5"], "--own must be a share of the training split in (0, 1]"),
        (["sfl-extract", "--aux", "cifar"], "--aux must be one of digits, uniform, gaussian, train"),
        (["sfl-extract", "--server-layers", "6"], "server_layers must be between 1 and 5"),
        (["sfl-extract", "--attack", "craft-me", "--budget", "5"], "at least one query per class"),
        (["attack", "gm-me"], "run it with `bastion sfl-extract --attack gm-me`"),
    ],
)
def test_sfl_extract_errors_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*args, "-c", str(DIGITS)])
    assert result.exit_code == 2
    assert (
        message in result.stderr and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    )


def test_plan_fields_are_checked() -> None:
    with pytest.raises(ConfigError, match="own must be a share"):
        parse_plan("scenarios:\n  - attack: train-me\n    own: 2\n")
    with pytest.raises(ConfigError, match="aux must be one of"):
        parse_plan("scenarios:\n  - attack: gm-me\n    aux: imagenet\n")
    with pytest.raises(ConfigError, match="budget must be >= 0"):
        parse_plan("scenarios:\n  - attack: gm-me\n    params: {budget: -3}\n")
    plan = parse_plan("scenarios:\n  - attack: softtrain-me\n    own: 1\n    server_layers: 2\n")
    (sc,) = plan.scenarios
    assert sc.kind == "split-extraction" and sc.settings.own == 1.0 and sc.settings.server_layers == 2
