"""The `protection` kind end to end: a plan's data-protection scenarios train on the protected set with the
model's recipe and adversarially, store their accuracies beside the clean references and the
perturbation's size, keep every trained model as a checkpoint (a resumed audit trains nothing again),
report (card, table, gallery), gate with `bastion check`, and `bastion protect` gives the audit's
numbers; mistakes are one line before anything runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.audit import KINDS, parse_plan
from bastion.cli._target import ModelSource
from bastion.cli.app import app
from bastion.core.errors import ConfigError
from bastion.store import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DIGITS = FIXTURES / "small_cnn-digits.safetensors"

PLAN = """\
scenarios:
  - attack: one-pixel-shortcut
    name: ops
    n: 300
  - attack: random-noise
    name: noise
    n: 300
    params: {eps: 0.1}
    adversarial: none
"""


def test_protection_scenarios_store_report_gate_and_match_the_command(tmp_path: Path) -> None:
    plan = tmp_path / "protect.yaml"
    plan.write_text(PLAN)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    runner = CliRunner()
    args = ["audit", "-c", str(DIGITS), "--plan", str(plan), "--db", url, "-o", str(tmp_path / "r")]
    audit = runner.invoke(app, args)
    assert audit.exit_code == 0, audit.stderr
    with Store(url) as store:
        ops, noise = store.run(1).results
    assert ops.family == noise.family == "protection"
    m, rec = ops.metrics, ops.record
    assert m["l0_pixels"] == 1 and m["linf"] == 1.0 and rec["n_protected"] == rec["n_train"]
    assert 0 <= m["accuracy"] <= 1 and m["drop"] == pytest.approx(m["clean_accuracy"] - m["accuracy"])
    assert rec["adversarial_recipe"] == "fgsm-rs" and m["adv_drop"] == pytest.approx(
        m["adv_clean_accuracy"] - m["adv_accuracy"]
    )
    assert len(rec["extra"]["pixels"]) == 10
    n = noise.metrics
    assert n["adv_accuracy"] is None and n["adv_drop"] is None and noise.record["adversarial_recipe"] is None
    assert 0.09 < n["linf"] <= 0.1 + 1e-6 and 32 < n["l0_pixels"] <= 64  # noise clipped at 0 changes nothing
    # the audited model is the clean reference; noise of 0.1 costs it little
    assert n["clean_accuracy"] == m["clean_accuracy"] and n["accuracy"] >= n["clean_accuracy"] - 0.1
    kept = sorted(p.name for p in (tmp_path / "r").rglob("*.safetensors"))
    assert len(kept) == 4, kept  # ops, ops adversarial, clean adversarial, noise
    html = (tmp_path / "r" / "report.html").read_text()
    assert 'id="protection"' in html and "data protection" in html and "protected-trained acc." in html
    assert "clean | protected training image" in html
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert {s["key"] for s in summary["scenarios"] if s["family"] == "protection"} == {"ops", "noise"}
    gate = ["check", "1", "--db", url, "--max", f"accuracy.noise={n['accuracy']}", "--min", "l0_pixels.ops=1"]
    assert runner.invoke(app, gate).exit_code == 0
    failed = runner.invoke(app, ["check", "1", "--db", url, "--max", "accuracy.noise=0.01"])
    assert failed.exit_code == 1
    # the command runs the same scenario: the same numbers
    out = tmp_path / "noise.json"
    cmd = ["protect", "random-noise", "eps=0.1", "-c", str(DIGITS), "--n", "300", "--adversarial", "none"]
    done = runner.invoke(app, [*cmd, "--json", str(out), "--quiet"])
    assert done.exit_code == 0, done.stderr
    row = json.loads(out.read_text())["scenarios"][0]
    assert row["metrics"]["accuracy"] == n["accuracy"] and row["metrics"]["linf"] == n["linf"]
    assert "protected" in done.stdout and "l0_pixels" in done.stdout


def test_a_resumed_scenario_reads_its_models_back(tmp_path: Path) -> None:
    target = replace(ModelSource(checkpoint=DIGITS, device="cpu").target(), model_dir=tmp_path / "models")
    (sc,) = parse_plan("scenarios:\n  - attack: one-pixel-shortcut\n    n: 100\n").scenarios
    kind = KINDS.get("protection")
    first = kind.run(sc, target, seed=0, progress=None)
    untrainable = replace(target, trainer=lambda *a, **k: pytest.fail("trained again"))
    again = kind.run(sc, untrainable, seed=0, progress=None)
    assert again.metrics == {**first.metrics, "seconds": again.metrics["seconds"]}


def test_mistakes_are_one_line_before_anything_runs(tmp_path: Path) -> None:
    bad = "scenarios:\n  - attack: one-pixel-shortcut\n    adversarial: fgsm-r\n"
    with pytest.raises(ConfigError, match=r'line 3: unknown training recipe .*Did you mean "fgsm-rs"'):
        parse_plan(bad)
    with pytest.raises(ConfigError, match="sparsity"):
        parse_plan("scenarios:\n  - attack: one-pixel-shortcut\n    params: {sparsity: 0}\n")
    runner = CliRunner()
    for args in (
        ["protect", "one-pixel-shortcut", "-c", str(DIGITS), "--adversarial", "nope"],
        ["protect", "one-pixel-shortcut", "sparsity=0", "-c", str(DIGITS)],
        ["protect", "pgd", "-c", str(DIGITS)],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    target = ModelSource(checkpoint=DIGITS, device="cpu").target()
    (sc,) = parse_plan("scenarios:\n  - attack: random-noise\n").scenarios
    with pytest.raises(ConfigError, match="cannot be retrained"):
        KINDS.get("protection").check(sc, replace(target, trainer=None))
