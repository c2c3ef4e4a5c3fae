"""Scenario kinds end to end: a killed audit resumes in a scenario of any kind with the numbers of an
uninterrupted run, a user's own model is audited the same way, the target retrains a model like the
audited one, and `bastion mia` / `bastion ood` give what the audit's scenarios give."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from bastion.audit import load_plan, parse_plan
from bastion.audit.kinds import KINDS
from bastion.cli._target import ModelSource
from bastion.cli.app import app
from bastion.core.errors import ConfigError
from bastion.store import Store
from bastion.train import accuracy

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MNIST = FIXTURES / "small_cnn-mnist5k.safetensors"

# Every kind takes a few seconds on the mnist5k model, so a kill lands inside the scenario that runs.
MIXED_PLAN = """\
name: mixed
n: 1000
scenarios:
  - detector: msp
  - attack: loss-threshold
  - detector: energy
    name: energy-noise
    sets: [uniform, gaussian]
  - attack: modified-entropy
  - attack: pgd
    eps: 0.1
    n: 100
    params: {steps: 40}
"""


def _keys(url: str) -> list[tuple[int, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return [(r[0], r[1]) for r in c.execute(text("select id, key from results order by id"))]
    except Exception:  # the tables may not exist yet
        return []
    finally:
        engine.dispose()


def _metrics(url: str, run_id: int) -> dict[str, dict[str, float]]:
    with Store(url) as store:
        return {r.key: {k: v for k, v in r.metrics.items() if k != "seconds"} for r in store.run(run_id).results}


def test_a_killed_audit_resumes_in_any_kind(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'killed.db'}"  # both backends are killed mid-scenario in test_audit_cli
    plan = tmp_path / "mixed.yaml"
    plan.write_text(MIXED_PLAN)
    args = [sys.executable, "-m", "bastion", "audit", "-c", str(MNIST), "--plan", str(plan), "-q"]
    args += ["--db", store_url, "-o", str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed_in = []
    for stored in (1, 2, 3):  # kill while the 2nd (membership), 3rd (ood) and 4th (membership) scenario runs
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while len(_keys(store_url)) < stored and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_in.append(len(_keys(store_url)))
    assert killed_in == [1, 2, 3], "each kill must land while scenarios remain"
    before = _keys(store_url)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resumed run 1: 3 scenario(s) already stored, 2 run now" in done.stderr
    after = _keys(store_url)
    assert after[:3] == before and [k for _, k in after] == [
        "msp",
        "loss-threshold",
        "energy-noise",
        "modified-entropy",
        "pgd",
    ]  # nothing redone, nothing duplicated
    # the interrupted run's numbers are those of a run that was never interrupted
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    clean = CliRunner().invoke(app, [*args[3:-4], "--db", fresh, "-o", str(tmp_path / "o2")])
    assert clean.exit_code == 0, clean.stderr
    assert _metrics(store_url, 1) == _metrics(fresh, 1)


def test_a_users_own_model_is_audited_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "usernets"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"
    )
    torch.manual_seed(0)
    save_file(
        {
            k: v.contiguous()
            for k, v in torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).state_dict().items()
        },
        str(tmp_path / "w.safetensors"),
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plan = tmp_path / "p.yaml"
    plan.write_text(
        "scenarios:\n  - attack: loss-threshold\n    n: 50\n  - detector: msp\n    n: 50\n    sets: [uniform]\n"
    )
    url = f"sqlite:///{tmp_path / 'u.db'}"
    args = ["audit", "--model", "usernets:build", "--weights", str(tmp_path / "w.safetensors"), "--data", "digits"]
    result = CliRunner().invoke(app, [*args, "--plan", str(plan), "--db", url, "-o", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 0, result.stderr
    with Store(url) as store:
        run = store.run(1)
    mia = run.results[0]
    assert mia.family == "membership" and "assumed to be the training split of digits" in mia.warnings[0]
    assert run.model.meta["factory"] == "usernets:build" and run.results[1].family == "ood"


def test_the_target_retrains_a_model_like_the_audited_one() -> None:
    target = ModelSource(checkpoint=FIXTURES / "small_cnn-digits.safetensors").target()
    ds = target.dataset
    fresh = target.train_fresh(ds.x_train, ds.y_train, seed=0)
    assert not fresh.training and fresh is not target.victim.model
    original = target.model_meta["clean_accuracy"]
    assert abs(accuracy(fresh, ds.x_test, ds.y_test) - original) < 0.03  # same recipe, same ballpark
    assert target.n_members == ds.x_train.shape[0] and not target.members_assumed


def test_mia_and_ood_commands_give_the_audit_numbers(tmp_path: Path) -> None:
    runner = CliRunner()
    mia = runner.invoke(
        app, ["mia", "modified-entropy", "-c", str(MNIST), "--n", "300", "--json", str(tmp_path / "m.json")]
    )
    assert mia.exit_code == 0, mia.stderr
    assert "300 members, 300 non-members" in mia.stdout and "modified-entropy" in mia.stdout
    ood = runner.invoke(
        app,
        [
            "ood",
            "energy",
            "-c",
            str(MNIST),
            "--n",
            "300",
            "--sets",
            "uniform,rotated",
            "--json",
            str(tmp_path / "o.json"),
            "-q",
        ],
    )
    assert ood.exit_code == 0, ood.stderr
    assert "energy uniform" in ood.stdout and "energy rotated" in ood.stdout
    plan = tmp_path / "p.yaml"
    plan.write_text(
        "scenarios:\n  - attack: modified-entropy\n    n: 300\n"
        "  - detector: energy\n    n: 300\n    sets: [uniform, rotated]\n"
    )
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert (
        runner.invoke(
            app, ["audit", "-c", str(MNIST), "--plan", str(plan), "--db", url, "-o", str(tmp_path / "r"), "-q"]
        ).exit_code
        == 0
    )
    audited = _metrics(url, 1)
    m = json.loads((tmp_path / "m.json").read_text())["scenarios"][0]["metrics"]
    o = json.loads((tmp_path / "o.json").read_text())["scenarios"][0]["metrics"]
    assert {k: v for k, v in m.items() if k != "seconds"} == audited["modified-entropy"]
    assert {k: v for k, v in o.items() if k != "seconds"} == audited["energy"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mia", "pgd"], "unknown membership attack 'pgd' ('pgd' is in the evasion family)"),
        (["ood", "aaa"], "unknown ood defense 'aaa' ('aaa' is in the postprocess family)"),
        (["ood", "--sets", "uniform,noise"], "unknown OOD set 'noise' in --sets"),
        (["ood", "--sets", "data"], "runs on the `data` OOD set only: give --ood-data SPEC"),
        (["mia", "--n", "0"], "--n must be at least 1"),
    ],
)
def test_lifecycle_command_errors_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*args, "-c", str(MNIST)])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


BACKDOOR_PLAN = """\
scenarios:
  - attack: badnets
    name: badnets-10pct
    n: 200
    params: {rate: 0.1, target: 3}
    detectors: [strip, ntd]
"""


def test_a_backdoor_scenario_keeps_its_model_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = tmp_path / "backdoor.yaml"
    plan.write_text(BACKDOOR_PLAN)
    out = tmp_path / "out"
    args = ["audit", "-c", str(FIXTURES / "small_cnn-digits.safetensors"), "--plan", str(plan), "-o", str(out), "-q"]
    first = CliRunner().invoke(app, [*args, "--db", f"sqlite:///{tmp_path / 'a.db'}"])
    assert first.exit_code == 0, first.stderr
    with Store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        (result,) = store.run(1).results
    m = result.metrics
    assert result.family == "backdoor" and m["asr"] >= 0.8 and m["clean_model_asr"] <= 0.2
    assert m["clean_drop"] <= 0.05 and result.record["n_poisoned"] == len(result.record["poisoned_index"])
    kept = out / "models" / "run-1" / f"{result.record['model_key']}.safetensors"
    assert kept.is_file() and result.artifacts[0].data.startswith(b"\x89PNG")
    html = (out / "report.html").read_text()
    assert 'id="backdoor"' in html and "attack success rate of the strongest backdoor" in html
    strip = result.record["detectors"]["strip"]
    assert strip["family"] == "backdoor-input" and m["strip_auroc"] == strip["auroc"] >= 0.9
    assert 'id="backdoor-roc"' in html and "badnets-10pct: strip" in html
    assert result.record["detectors"]["ntd"]["extra"]["forwards_per_input"] == 2 and 0 <= m["ntd_auroc"] <= 1

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the kept model must be read back, not trained again")

    monkeypatch.setattr("bastion.cli._target.train_like", no_training)
    again = CliRunner().invoke(app, [*args, "--db", f"sqlite:///{tmp_path / 'b.db'}"])
    assert again.exit_code == 0, again.stderr
    assert _metrics(f"sqlite:///{tmp_path / 'a.db'}", 1) == _metrics(f"sqlite:///{tmp_path / 'b.db'}", 1)
    # a target that cannot train (an API user's AuditTarget without a trainer) is refused by the kind
    target = ModelSource(checkpoint=FIXTURES / "small_cnn-digits.safetensors").target()
    (scenario,) = load_plan(str(plan)).scenarios
    with pytest.raises(ConfigError, match="cannot be retrained"):
        KINDS.get("backdoor").check(scenario, replace(target, trainer=None))
    with pytest.raises(ConfigError, match=r"line 6: unknown backdoor detector 'stirp'. Did you mean \"strip\"\?"):
        parse_plan(BACKDOOR_PLAN.replace("[strip, ntd]", "[stirp]"))
