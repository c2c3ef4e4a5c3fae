"""`bastion audit`, `report`, `compare` and `check` end to end on a tiny model and plan."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from bastion.cli._target import ModelSource
from bastion.cli.app import app
from bastion.store import Store

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_audit_stores_every_scenario_and_writes_the_report(
    digits_checkpoint: Path, tiny_plan: Path, store_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    code, stdout, stderr = run(
        "audit", "-c", digits_checkpoint, "--plan", tiny_plan, "--db", store_url, "-o", out, "-q"
    )
    assert code == 0, stderr
    assert f"report: {out / 'report.html'}" in stdout and "white-box evasion" in stdout
    run_id = int(stdout.split(", run ")[1].split()[0])
    with Store(store_url) as store:
        stored = store.run(run_id)
    assert stored.status == "finished" and stored.plan_name == "tiny" and stored.seed == 1
    assert stored.sample_indices == list(range(100)) and stored.data == "digits"  # the most any scenario uses
    assert [r.key for r in stored.results] == ["fgsm@0.1", "fgsm@0.3", "pgd", "square", "modified-entropy", "energy"]
    assert [r.family for r in stored.results] == ["evasion"] * 4 + ["membership", "ood"]
    target = ModelSource(checkpoint=digits_checkpoint).target()
    for r in stored.results[:4]:  # the stored numbers are those of the model on the images the record names
        m, per_sample = r.metrics, r.record["per_sample"]
        x, y = target.test(r.spec["n"])
        assert per_sample["y"] == y.tolist()
        assert m["clean_accuracy"] == pytest.approx(float((target.victim.predict(x) == y).float().mean()))
        robust = [a == b for a, b in zip(per_sample["y_adv"], per_sample["y"], strict=True)]
        assert m["robust_accuracy"] == pytest.approx(sum(robust) / len(robust))
        assert m["success_rate"] > 0 or r.key == "fgsm@0.1"
        assert (len(r.artifacts) > 0) == (m["success_rate"] > 0) and len(r.artifacts) <= 4
        assert all(a.data.startswith(b"\x89PNG") for a in r.artifacts)
    mia, ood = stored.results[4:]
    assert mia.record["n_positive"] == mia.record["n_negative"] == 100 and 0 <= mia.metrics["auroc"] <= 1
    assert set(ood.metrics) == {
        "auroc",
        "fpr95",
        "auroc_uniform",
        "fpr95_uniform",
        "auroc_inverted",
        "fpr95_inverted",
        "seconds",
    }
    assert ood.metrics["auroc"] == (ood.metrics["auroc_uniform"] + ood.metrics["auroc_inverted"]) / 2
    assert len(ood.artifacts) == 1 and not mia.artifacts
    square = stored.results[3]
    budgets = square.record["extra"]["query_curve"]["budgets"]
    assert square.metrics["queries_max"] <= 50 and budgets[-1] >= square.metrics["queries_max"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["id"] == run_id
    families = ["white-box evasion", "black-box evasion", "sanity checks", "membership inference", "OOD detection"]
    assert [c["family"] for c in summary["scorecard"]] == families
    html = (out / "report.html").read_text()
    assert 'id="membership-roc"' in html and 'id="ood-roc-energy"' in html
    assert html.count("<svg") >= 4 and html.count("data:image/png;base64,") == sum(
        len(r.artifacts) for r in stored.results
    )
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//|url\(\s*[\"']?(https?:)?//|@import", html)  # no fetch


def test_audit_without_a_model_trains_the_default_once(
    tiny_plan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run("audit", "--data", "digits", "--plan", tiny_plan, "-q")
    assert code == 0, stderr
    assert "training small_cnn on digits" in stderr
    assert Path("checkpoints/small_cnn-digits-standard.safetensors").exists() and Path("bastion.db").exists()
    assert Path("runs/run-1/report.html").exists()
    code, _, stderr = run("audit", "--data", "digits", "--plan", tiny_plan, "-q")
    assert code == 0 and "training" not in stderr  # reused
    with Store("sqlite:///bastion.db") as store:
        assert store.run_ids() == [1, 2]  # the first run had finished: a new one


def _results(url: str) -> list[tuple[int, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return [(r[0], r[1]) for r in c.execute(text("select id, key from results order by id"))]
    except Exception:  # the tables may not exist yet
        return []
    finally:
        engine.dispose()


SLOW_PLAN = """\
name: slow
n: 100
scenarios:
  - attack: fgsm
    eps: 0.1
  - attack: pgd
    eps: [0.01, 0.02, 0.03, 0.04]
    params: {steps: 300, early_stop: false}
"""


def test_a_killed_audit_resumes_without_redoing_or_duplicating(
    digits_checkpoint: Path, store_url: str, tmp_path: Path
) -> None:
    plan = tmp_path / "slow.yaml"
    plan.write_text(SLOW_PLAN)
    args = [sys.executable, "-m", "bastion", "audit", "-c", str(digits_checkpoint), "--plan", str(plan)]
    args += ["--db", store_url, "-o", str(tmp_path / "out"), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _results(store_url) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-scenario: the first result is in, the next one is running
    proc.wait()
    before = _results(store_url)
    assert 1 <= len(before) < 5, "the audit must be killed while scenarios remain"
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resumed run 1: {len(before)} scenario(s) already stored, {5 - len(before)} run now" in done.stderr
    after = _results(store_url)
    assert after[: len(before)] == before  # finished scenarios were not redone
    assert sorted(k for _, k in after) == sorted(["fgsm", "pgd@0.01", "pgd@0.02", "pgd@0.03", "pgd@0.04"])
    with Store(store_url) as store:
        assert store.run(1).status == "finished" and store.run_ids() == [1]


def test_report_compare_and_check(digits_checkpoint: Path, tiny_plan: Path, store_url: str, tmp_path: Path) -> None:
    base = ["--db", store_url]
    assert run("audit", "-c", digits_checkpoint, "--plan", tiny_plan, *base, "-o", tmp_path / "a", "-q")[0] == 0
    other = tmp_path / "other.yaml"
    other.write_text(tiny_plan.read_text().replace("seed: 1", "seed: 2"))
    assert run("audit", "-c", digits_checkpoint, "--plan", other, *base, "-o", tmp_path / "b", "-q")[0] == 0

    code, stdout, _ = run("report", "1", *base, "-o", tmp_path / "again")
    assert (
        code == 0 and (tmp_path / "again" / "report.html").exists() and (tmp_path / "again" / "summary.json").exists()
    )

    code, stdout, _ = run("compare", "1", "2", *base)
    assert code == 0 and "robust_accuracy.pgd" in stdout and "clean_accuracy" in stdout and "auroc.energy" in stdout

    robust = json.loads((tmp_path / "a" / "summary.json").read_text())["scenarios"][2]["metrics"]["robust_accuracy"]
    code, stdout, _ = run("check", "1", "--min", f"robust_accuracy.pgd={robust - 0.01}", *base)
    assert code == 0 and "all 1 bound(s) hold" in stdout
    code, stdout, _ = run(
        "check", "1", "--min", f"robust_accuracy.pgd={robust + 0.01}", "--max", "seconds.fgsm@0.1=100", *base
    )
    assert code == 1 and "FAIL robust_accuracy.pgd" in stdout and "ok   seconds.fgsm@0.1" in stdout

    code, stdout, _ = run("check", "1", "--min", "auroc.energy=0.5", "--max", "auroc.modified-entropy=0.99", *base)
    assert code == 0 and "ok   auroc.energy" in stdout and "ok   auroc.modified-entropy" in stdout
    code, _, stderr = run("check", "1", "--min", "robust_accuracy.pdg=0.5", *base)
    assert code == 2 and "no metric 'robust_accuracy.pdg'. Did you mean \"robust_accuracy.pgd\"?" in stderr
    code, _, stderr = run("check", "1", "--min", "robust_accuracy.pgd", *base)
    assert code == 2 and "takes METRIC=NUMBER" in stderr
    code, _, stderr = run("report", "9", *base)
    assert code == 2 and "no run 9" in stderr and "runs stored: 1, 2" in stderr


def test_audit_user_errors_are_one_line(digits_checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenarios:\n  - attack: pgd\n    epz: 1\n")
    for args, message in [
        (["--plan", bad], f"{bad} line 3: unknown field 'epz'"),
        (["--plan", "quik"], "unknown plan 'quik'. Did you mean \"quick\"?"),
        (["--plan", "quick", "--db", "nonsense://"], "is not a usable database URL"),
        (["--plan", "quick", "-c", tmp_path / "none.safetensors"], "none.safetensors"),
    ]:
        code, _, stderr = run("audit", *args, "-q")
        assert code == 2 and message in stderr and stderr.count("\n") == 1, stderr
