"""The `bitflip` kind end to end: a plan's bit-flip scenarios are stored with their metrics and the
random baseline, reported (card, table, accuracy-vs-flips plot), gated by `bastion check`, and
`bastion bitflip` gives the audit's numbers; mistakes are one line before anything runs."""

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
  - attack: bfa
    n: 200
    params: {max_flips: 8, batch_size: 64}
  - attack: random-flip
    name: random-layer
    n: 200
    params: {max_flips: 5, draw: layer}
  - attack: t-bfa
    name: t-bfa-0to1
    n: 200
    params: {mode: 1-to-1, source: 0, target: 1, max_flips: 10}
    baseline: false
"""


def test_bitflip_scenarios_store_report_gate_and_match_the_command(tmp_path: Path) -> None:
    plan = tmp_path / "bits.yaml"
    plan.write_text(PLAN)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    checkpoint_before = DIGITS.read_bytes()
    runner = CliRunner()
    audit = runner.invoke(
        app, ["audit", "-c", str(DIGITS), "--plan", str(plan), "--db", url, "-o", str(tmp_path / "r")]
    )
    assert audit.exit_code == 0, audit.stderr
    with Store(url) as store:
        bfa, rnd, targeted = store.run(1).results
    assert bfa.family == rnd.family == "bitflip"
    m = bfa.metrics
    assert m["flips"] == 8 == bfa.record["hamming"] and len(bfa.record["accuracy_curve"]) == 9
    assert m["accuracy"] < m["quantized_accuracy"] and abs(m["float_accuracy"] - m["quantized_accuracy"]) <= 0.01
    assert bfa.record["baseline"]["method"] == "random-flip" and bfa.record["baseline"]["flips"] == 8
    assert m["random_accuracy"] == bfa.record["baseline"]["accuracy"] >= m["quantized_accuracy"] - 0.05
    assert rnd.metrics["random_accuracy"] is None and rnd.record["baseline"] is None  # no baseline for random
    assert rnd.metrics["flips"] == 5 and rnd.record["params"]["draw"] == "layer"
    t = targeted.metrics
    assert t["asr"] == targeted.record["curves"]["asr"][-1] and 0 <= t["other_accuracy"] <= 1
    assert t["flips"] <= 10 and t["random_accuracy"] is None and targeted.record["params"]["quantization"] == "tbfa"
    html = (tmp_path / "r" / "report.html").read_text()
    assert "targeted bit flips" in html and "acc. on the other classes" in html
    assert 'id="bitflip"' in html and 'id="bitflip-accuracy"' in html and "weight-bit flips" in html
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert set(summary["curves"]["bitflip"]["accuracy"]) == {"bfa", "bfa (random)", "random-layer", "t-bfa-0to1"}
    assert set(summary["curves"]["bitflip"]["success"]) == {"t-bfa-0to1"}
    gate = [
        "check",
        "1",
        "--db",
        url,
        "--min",
        "flips.bfa=8",
        "--max",
        "accuracy.bfa=0.99",
        "--min",
        "asr.t-bfa-0to1=0",
    ]
    assert runner.invoke(app, gate).exit_code == 0
    failed = runner.invoke(app, ["check", "1", "--db", url, "--min", "accuracy.bfa=1.0"])
    assert failed.exit_code == 1
    cli = runner.invoke(
        app,
        [
            "bitflip",
            "bfa",
            "max_flips=8",
            "batch_size=64",
            "-c",
            str(DIGITS),
            "--n",
            "200",
            "--json",
            str(tmp_path / "b.json"),
            "-q",
        ],
    )
    assert cli.exit_code == 0, cli.stderr
    assert "bit flips on small_cnn-digits.safetensors: 200 test images" in cli.stdout
    assert DIGITS.read_bytes() == checkpoint_before  # the flips hit a copy: the checkpoint file is untouched
    record = json.loads((tmp_path / "b.json").read_text())["scenarios"][0]
    assert {k: v for k, v in record["metrics"].items() if k != "seconds"} == {
        k: v for k, v in m.items() if k != "seconds"
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bitflip", "pgd"], "unknown bitflip attack 'pgd' ('pgd' is in the evasion family)"),
        (["bitflip", "bfa", "max_flips=0"], "bfa: max_flips must be >= 1; got 0"),
        (["bitflip", "bfa", "flips=3"], "bfa has no parameter 'flips'. Did you mean \"max_flips\"?"),
        (["bitflip", "random-flip", "draw=rows"], "random-flip: draw must be 'bits' | 'layer'"),
        (["bitflip", "bfa", "--n", "0"], "--n must be at least 1"),
        (["bitflip", "bfa", "batch_size=100000"], "draws an attack batch of 100000 training images"),
        (["attack", "bfa"], "run it with `bastion bitflip bfa`"),
    ],
)
def test_bitflip_command_errors_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*args, "-c", str(DIGITS)])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  - attack: bfa\n    baseline: maybe\n", "line 3: `baseline` must be a bool"),
        ("  - attack: bfa\n    params: {k_top: -1}\n", "line 3: scenario 1: bfa: k_top must be >= 1"),
        ("  - attack: bfa\n    eps: 0.3\n", "line 3: unknown field 'eps' in scenario 1"),
    ],
)
def test_plan_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("`", ".")):
        parse_plan("scenarios:\n" + text)
