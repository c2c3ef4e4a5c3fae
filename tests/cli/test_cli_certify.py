"""`bastion certify`: a summary and a JSON record on success; one line and exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli.app import app
from bastion.train import train_checkpoint

runner = CliRunner()
FAST = ["--n", "6", "--n0", "10", "--samples", "100", "-q"]


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def assert_user_error(code: int, stdout: str, stderr: str, match: str) -> None:
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in stdout + stderr


def test_certify_prints_the_curve_and_writes_json(digits_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "cert.json"
    args = ["certify", "-c", digits_checkpoint, "--sigma", "0.25", *FAST, "--radii", "0.5,0,0.25", "--json", out]
    code, stdout, stderr = run(*args)
    assert code == 0, stderr
    assert "certified accuracy" in stdout and "abstain rate" in stdout and "radius 0.25" in stdout
    d = json.loads(out.read_text())
    assert d["sigma"] == 0.25 and d["n0"] == 10 and d["n"] == 100 and d["alpha"] == 0.001
    assert d["images"] == 6 and d["data"] == "digits" and d["checkpoint"] == str(digits_checkpoint)
    assert [row["radius"] for row in d["certified_accuracy"]] == [0.0, 0.25, 0.5]  # sorted
    curve = [row["accuracy"] for row in d["certified_accuracy"]]
    assert curve == sorted(curve, reverse=True)
    assert d["max_radius"] == pytest.approx(0.25 * 1.50048, rel=1e-5)  # Phi^-1(0.001^(1/100))
    code, _, _ = run(*args[:-1], tmp_path / "again.json")
    assert code == 0 and json.loads((tmp_path / "again.json").read_text())["per_sample"] == d["per_sample"]


def test_sigma_defaults_to_the_gaussian_recipes(tmp_path: Path) -> None:
    ckpt = tmp_path / "g.safetensors"
    train_checkpoint(
        model="mlp", data="digits", out=ckpt, recipe="gaussian", recipe_params={"sigma": 0.3}, epochs=1, device="cpu"
    )
    out = tmp_path / "g.json"
    code, _, stderr = run("certify", "-c", ckpt, *FAST, "--json", out)
    assert code == 0, stderr
    assert json.loads(out.read_text())["sigma"] == 0.3


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--sigma", "0"], "--sigma must be a positive number"),
        (["--sigma", "-0.5"], "--sigma must be a positive number"),
        (["--sigma", "0.25", "--radii", "0,x"], "--radii takes comma-separated L2 radii >= 0, e.g. 0,0.5,1.0"),
        (["--sigma", "0.25", "--radii", "0,-1"], "--radii takes comma-separated L2 radii >= 0"),
        (["--sigma", "0.25", "--radii", ","], "--radii takes comma-separated L2 radii >= 0"),
        (["--sigma", "0.25", "--alpha", "1.5"], "alpha"),
        (["--sigma", "0.25", "--samples", "0"], "n (noise samples per image) must be a positive integer"),
        (["--sigma", "0.25", "--n", "0"], "--n must be at least 1"),
        ([], "give --sigma"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(digits_checkpoint: Path, extra: list[str], match: str) -> None:
    assert_user_error(*run("certify", "-c", digits_checkpoint, "-q", *extra), match=match)
