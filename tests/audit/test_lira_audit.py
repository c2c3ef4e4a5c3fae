"""LiRA as a `membership` scenario: the shadows train with the audited model's recipe on halves of the
candidates, are kept and shared by the scenarios that draw the same halves, the ROC is drawn beside the
loss threshold's, `bastion mia lira` gives the audit's numbers, and mistakes are one line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bastion.cli._target as target_module
from bastion.audit import KINDS, Scenario
from bastion.audit.kinds import MethodParams
from bastion.cli._target import ModelSource
from bastion.cli.app import app
from bastion.core.errors import ConfigError
from bastion.store import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DIGITS = FIXTURES / "small_cnn-digits.safetensors"

PLAN = """\
scenarios:
  - attack: loss-threshold
    n: 100
  - attack: lira
    n: 100
    params: {shadows: 4}
  - attack: lira
    name: lira-offline
    n: 100
    params: {shadows: 4, online: false, fixed_variance: false}
"""


def test_lira_scenarios_share_cached_shadows_and_match_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = []
    real = target_module.train_like

    def counting(*args: object, **kwargs: object) -> object:
        trained.append(kwargs["seed"])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(target_module, "train_like", counting)
    plan = tmp_path / "lira.yaml"
    plan.write_text(PLAN)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    runner = CliRunner()
    args = ["audit", "-c", str(DIGITS), "--plan", str(plan), "--db", url, "-o", str(tmp_path / "r")]
    audit = runner.invoke(app, args)
    assert audit.exit_code == 0, audit.stderr
    assert sorted(trained) == [1, 2, 3, 4]  # four shadows, trained once for both LiRA scenarios
    with Store(url) as store:
        loss, online, offline = store.run(1).results
    assert online.family == offline.family == "membership"
    shadows = online.record["shadows"]
    assert shadows["models"] == 4 and shadows["population"] == 200 and sum(shadows["train_sizes"]) == 400
    assert shadows["keys"] == offline.record["shadows"]["keys"]
    assert sorted(p.stem for p in (tmp_path / "r" / "models" / "run-1").glob("*.safetensors")) == sorted(
        shadows["keys"]
    )
    assert online.record["n_positive"] == online.record["n_negative"] == 100
    assert online.record["params"]["online"] and not offline.record["params"]["online"]
    assert 0 <= online.metrics["auroc"] <= 1 and online.metrics["seconds"] >= shadows["seconds"]
    html = (tmp_path / "r" / "report.html").read_text()
    assert 'id="membership-roc"' in html and "lira-offline" in html and "loss-threshold" in html

    # the command runs the same scenario: same halves, same seeds, same numbers (retrained, no cache)
    out = tmp_path / "m.json"
    mia = runner.invoke(
        app, ["mia", "lira", "loss-threshold", "-c", str(DIGITS), "--n", "100", "-p", "shadows=4", "--json", str(out)]
    )
    assert mia.exit_code == 0, mia.stderr
    rows = {r["key"]: r for r in json.loads(out.read_text())["scenarios"]}
    assert rows["lira"]["metrics"]["auroc"] == online.metrics["auroc"]
    assert rows["loss-threshold"]["metrics"]["auroc"] == loss.metrics["auroc"]
    assert len(trained) == 8


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["mia", "lira", "-p", "shadows=3"], "shadows must be even"),
        (["mia", "lira", "-p", "foo=1"], "none of lira takes a parameter 'foo'"),
        (["mia", "loss-threshold", "-p", "shadows"], "key=value"),
        (["mia", "lira", "-p", "two_sided=true"], "two_sided applies to the offline attack"),
    ],
)
def test_mia_parameter_mistakes_are_one_line(argv: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*argv, "-c", str(DIGITS), "--n", "10"])
    assert result.exit_code == 2 and message in result.stderr


def test_a_model_that_cannot_be_retrained_has_no_shadows() -> None:
    target = replace(ModelSource(checkpoint=DIGITS).target(), trainer=None)
    kind = KINDS.get("membership")
    kind.check(Scenario("loss-threshold", "membership", "loss-threshold", 10, MethodParams({})), target)
    with pytest.raises(ConfigError, match="trains shadow models"):
        kind.check(Scenario("lira", "membership", "lira", 10, MethodParams({"shadows": 4})), target)
