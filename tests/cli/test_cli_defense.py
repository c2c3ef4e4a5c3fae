"""`bastion attack ... --defense` and `bastion list defenses`."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli.app import app

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_square_through_chained_defenses_records_them(digits_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "sq.json"
    args = ["attack", "square", "n_queries=30", "-c", digits_checkpoint, "--n", "12", "--eps", "0.1", "-q"]
    defenses = ["--defense", "aaa:steps=20,interval=4", "--defense", "round:decimals=3"]
    code, stdout, stderr = run(*args, *defenses, "--max-queries", "20", "--json", out)
    assert code == 0, stderr
    assert "defense       aaa (interval=4.0" in stdout and "defense       round (decimals=3)" in stdout
    d = json.loads(out.read_text())
    assert [p["name"] for p in d["defenses"]] == ["aaa", "round"]
    assert d["defenses"][0]["params"]["steps"] == 20 and d["defenses"][0]["params"]["interval"] == 4.0
    assert d["defenses"][1]["params"] == {"decimals": 3}
    assert d["queries_max"] <= 20


def test_attack_without_defense_records_an_empty_list(digits_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.json"
    code, _, stderr = run("attack", "fgsm", "-c", digits_checkpoint, "--n", "5", "--no-checks", "-q", "--json", out)
    assert code == 0, stderr
    assert json.loads(out.read_text())["defenses"] == []


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["attack", "pgd", "--defense", "aaa"], "white-box attack"),
        (["attack", "square", "--defense", "aab"], 'Did you mean "aaa"'),
        (["attack", "square", "--defense", "aaa:intervl=3"], 'Did you mean "interval"'),
        (["attack", "square", "--defense", "round:decimals=two"], "decimals must be int"),
        (["attack", "square", "--defense", "topk:k=0"], "k must be >= 1"),
    ],
)
def test_defense_user_errors(digits_checkpoint: Path, args: list[str], match: str) -> None:
    code, stdout, stderr = run(*args, "-c", digits_checkpoint)
    assert code == 2, stdout + stderr
    line = stderr.strip().splitlines()
    assert len(line) == 1 and match in line[0] and "Traceback" not in stderr


def test_list_defenses_names_the_post_processors() -> None:
    code, stdout, _ = run("list", "defenses")
    assert code == 0
    for name in ("aaa", "round", "topk", "label-only", "reverse-sigmoid"):
        assert f"  {name} " in stdout
    assert "pgd-at" not in stdout  # training recipes are listed under `bastion list recipes`
