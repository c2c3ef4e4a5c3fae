"""The `ownership` kind end to end on the 8x8 digits: a plan's ownership scenarios are stored with a
p-value per suspect, reported (card, table), gated by `bastion check`, and `bastion ownership` gives
the audit's numbers; `bastion watermark embed|verify` round-trip a key; mistakes are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli.app import app
from bastion.store import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DIGITS = FIXTURES / "small_cnn-digits.safetensors"

PLAN = """\
seed: 0
scenarios:
  - ownership: watermark
    n: 360
    params: {n: 20, wm_batch: 8}
    prune: 0.3
  - ownership: dataset-inference
    name: di
    n: 360
    params: {directions: 2, max_steps: 10, m: 5, subsets: 20, regressor_steps: 200}
    fit_points: 40
    test_points: 20
"""


def test_ownership_scenarios_store_report_gate_and_match_the_command(tmp_path: Path) -> None:
    plan = tmp_path / "own.yaml"
    plan.write_text(PLAN)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    runner = CliRunner()
    audit = runner.invoke(
        app, ["audit", "-c", str(DIGITS), "--plan", str(plan), "--db", url, "-o", str(tmp_path / "r")]
    )
    assert audit.exit_code == 0, audit.stderr
    with Store(url) as store:
        wm, di = store.run(1).results
    assert wm.family == di.family == "ownership"
    assert set(wm.record["suspects"]) == {"marked", "finetuned", "pruned", "independent"}
    assert set(di.record["suspects"]) == {"marked", "finetuned", "pruned", "independent", "distilled"}
    for row in (wm, di):
        for name, s in row.record["suspects"].items():
            assert row.metrics[f"p_{name}"] == s["p_value"] and 0.0 <= s["p_value"] <= 1.0
            assert s["claimed"] == (s["p_value"] < 0.01)
    assert all(s["queries"] == 20 for s in wm.record["suspects"].values())  # one label query per key image
    assert all(s["queries_max"] <= 3 * 2 * 10 for s in di.record["suspects"].values())  # Blind Walk's budget
    assert wm.record["key"]["n"] == 20 and wm.record["key"]["p0"] == 0.1
    assert di.metrics["clean_drop"] == 0.0  # dataset inference leaves the model as it is
    html = (tmp_path / "r" / "report.html").read_text()
    assert 'id="ownership"' in html and "ownership: watermark" in html and "fine-tuned (FTAL)" in html
    gate = ["check", "1", "--db", url, "--min", "p_independent.watermark=0", "--max", "p_marked.di=1"]
    assert runner.invoke(app, gate).exit_code == 0
    assert runner.invoke(app, ["check", "1", "--db", url, "--max", "p_marked.watermark=-1"]).exit_code == 1
    cli = runner.invoke(
        app,
        [
            "ownership",
            "--method",
            "watermark",
            "n=20",
            "wm_batch=8",
            "-c",
            str(DIGITS),
            "--n",
            "360",
            "--prune",
            "0.3",
            "--json",
            str(tmp_path / "o.json"),
            "-q",
        ],
    )
    assert cli.exit_code == 0, cli.stderr
    assert "ownership (watermark) on small_cnn-digits.safetensors: 179 evaluation images" in cli.stdout
    record = json.loads((tmp_path / "o.json").read_text())["scenarios"][0]
    assert {k: v for k, v in record["metrics"].items() if k != "seconds"} == {
        k: v for k, v in wm.metrics.items() if k != "seconds"
    }


def test_watermark_embed_and_verify_round_trip(tmp_path: Path) -> None:
    runner = CliRunner()
    marked, key = tmp_path / "marked.safetensors", tmp_path / "wm.key"
    embed = runner.invoke(
        app,
        ["watermark", "embed", "n=20", "wm_batch=8", "-c", str(DIGITS), "--out", str(marked), "--key", str(key), "-q"],
    )
    assert embed.exit_code == 0, embed.stderr
    assert marked.is_file() and key.is_file() and "key agreement" in embed.stdout
    agreed = embed.stdout.split("key agreement ")[1].split(",")[0]  # "m/20"
    out = tmp_path / "v.json"
    verify = runner.invoke(app, ["watermark", "verify", "--key", str(key), "-c", str(marked), "--json", str(out)])
    assert verify.exit_code == 0, verify.stderr
    record = json.loads(out.read_text())
    assert f"{record['matches']}/{record['n']}" == agreed and record["queries"] == 20
    clean = runner.invoke(app, ["watermark", "verify", "--key", str(key), "-c", str(DIGITS), "--json", str(out)])
    assert clean.exit_code == 0 and json.loads(out.read_text())["p_value"] >= record["p_value"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ownership", "--method", "pgd"], "unknown ownership defense 'pgd'"),
        (["ownership", "--method", "watermark", "n=0"], "watermark: n must be >= 1; got 0"),
        (["ownership", "--method", "watermark", "--suspect", str(DIGITS)], "bastion watermark verify --key KEY"),
        (["ownership", "--method", "blackmarks", "bit=3"], "blackmarks has no parameter 'bit'"),
        (["watermark", "verify", "--key", "missing.key"], "no key file at missing.key"),
    ],
)
def test_ownership_command_errors_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*args, "-c", str(DIGITS)])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["ownership"], ["watermark", "verify", "--key", "k.key"]])
def test_a_missing_checkpoint_names_the_one_option_these_commands_take(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)  # they take no --model: the error must not offer one
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: give --checkpoint CKPT (a bastion checkpoint)"


def test_ownership_command_tests_given_suspects_with_dataset_inference(tmp_path: Path) -> None:
    surrogate = FIXTURES / "small_cnn-digits-surrogate.safetensors"
    args = ["ownership", "directions=2", "max_steps=10", "m=5", "subsets=10", "regressor_steps=100", "-c", str(DIGITS)]
    args += ["--suspect", str(DIGITS), "--suspect", str(surrogate), "--fit-points", "40", "--test-points", "20"]
    result = CliRunner().invoke(app, [*args, "--n", "360", "-q", "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.stderr
    assert "regressor on 40 private and 40 public points, 20 of each tested" in result.stdout
    suspects = json.loads((tmp_path / "s.json").read_text())["suspects"]
    assert [s["suspect"] for s in suspects] == [str(DIGITS), str(surrogate)]
    assert all(s["n"] == 20 and s["queries_max"] <= 3 * 2 * 10 and 0 <= s["p_value"] <= 1 for s in suspects)
