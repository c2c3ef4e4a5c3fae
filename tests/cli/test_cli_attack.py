import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli.app import app

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_attack_pgd_prints_summary_and_writes_json(digits_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "pgd.json"
    args = ["attack", "pgd", "steps=10", "-c", digits_checkpoint, "--n", "50", "--eps", "0.2", "--json", out, "-q"]
    code, stdout, stderr = run(*args)
    assert code == 0, stderr
    assert "robust" in stdout and "success rate" in stdout
    d = json.loads(out.read_text())
    keys = {"attack", "params", "n", "clean_accuracy", "robust_accuracy", "success_rate", "seconds"}
    keys |= {"queries_mean", "queries_median", "queries_max", "linf_max", "l2_median", "warnings"}
    assert keys <= set(d)
    assert d["attack"] == "pgd" and d["params"]["steps"] == 10 and d["n"] == 50
    assert d["linf_max"] <= 0.2 + 1.2e-7
    assert d["robust_accuracy"] <= d["clean_accuracy"] - 0.5  # PGD at 0.2 breaks an undefended digits model


def test_attack_fgsm_l2_targeted_without_checks(digits_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.json"
    args = ["attack", "fgsm", "-c", digits_checkpoint, "--n", "20", "--norm", "l2", "--eps", "1.0", "--targeted"]
    code, _, stderr = run(*args, "--no-checks", "--json", out, "-q")
    assert code == 0, stderr
    d = json.loads(out.read_text())
    assert d["threat"]["targeted"] and d["threat"]["norm"] == "l2"
    assert all(t != y for t, y in zip(d["per_sample"]["target"], d["per_sample"]["y"], strict=True))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["attack", "pgdd"], 'Did you mean "pgd"'),
        (["attack", "pgd", "stepz=3"], 'Did you mean "steps"'),
        (["attack", "pgd", "steps=many"], "steps must be int"),
        (["attack", "pgd", "steps"], "key=value"),
        (["attack", "pgd", "--eps", "eight"], "--eps takes a number"),
        (["attack", "pgd", "--norm", "l7"], "--norm must be linf or l2"),
        (["attack", "pgd", "--n", "0"], "--n must be at least 1"),
        (["attack", "badnets"], "'badnets' is in the backdoor family"),
        (["attack", "loss-threshold"], "'loss-threshold' is in the membership family"),
        (["poison", "pgd"], "'pgd' is in the evasion family"),
        (["poison", "badnets", "rate=2"], "rate must be > 0 and < 1"),
        (["poison", "badnets", "--detect", "stirp"], "unknown backdoor detector 'stirp'. Did you mean \"strip\"?"),
        (["poison", "wanet", "rate=0.4"], "exceed the whole set"),
        (["poison", "wanet", "poisoning=online"], "poisoning must be"),
    ],
)
def test_attack_user_errors(digits_checkpoint: Path, args: list[str], match: str) -> None:
    code, stdout, stderr = run(*args, "-c", digits_checkpoint)
    assert code == 2, stdout + stderr
    line = stderr.strip().splitlines()
    assert len(line) == 1 and match in line[0] and "Traceback" not in stderr


DIGITS = Path(__file__).resolve().parents[1] / "fixtures" / "small_cnn-digits.safetensors"


@pytest.mark.parametrize(("name", "param"), [("uap", "max_passes=1"), ("fg-uap", "epochs=2")])
def test_universal_attacks_print_the_papers_held_out_numbers(name: str, param: str, tmp_path: Path) -> None:
    out = tmp_path / "u.json"
    code, stdout, stderr = run("attack", name, param, "-c", DIGITS, "--n", "60", "--eps", "0.3", "--json", out, "-q")
    assert code == 0, stderr
    d = json.loads(out.read_text())
    e, y, y_adv = d["extra"], d["per_sample"]["y"], d["per_sample"]["y_adv"]
    held = e["heldout_index"]
    assert e["n_heldout"] == len(held) == 30 and e["n_fit"] == 30
    # the accuracy under v, re-measured from the per-image records: v reaches every held-out image
    assert e["accuracy_under_v_heldout"] == sum(y_adv[i] == y[i] for i in held) / 30
    assert d["robust_accuracy"] == sum(a == b for a, b in zip(y_adv, y, strict=True)) / 60
    assert f"fooling rate  {e['fooling_rate_heldout']:.2%} of the 30 held-out images, correct or not" in stdout
    assert f"under v       accuracy {e['accuracy_under_v_heldout']:.2%} on the held-out images" in stdout
    assert f"(clean {e['clean_accuracy_heldout']:.2%})" in stdout


def test_a_bad_universal_setting_is_one_line() -> None:
    code, _, stderr = run("attack", "fg-uap", "val_fraction=1", "-c", DIGITS, "--n", "10")
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "val_fraction" in stderr
