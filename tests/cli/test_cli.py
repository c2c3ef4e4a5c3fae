import json
import os
import pickle
import textwrap
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import save_file
from typer.testing import CliRunner

from bastion.cli._target import ModelSource
from bastion.cli.app import app
from bastion.core.errors import CheckpointError
from bastion.models.checkpoint import read_meta

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def assert_user_error(code: int, stdout: str, stderr: str, match: str) -> None:
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert match in lines[0]
    assert "Traceback" not in stdout + stderr


def test_help_everywhere() -> None:
    for args in ([], ["list"], ["train"], ["eval"]):
        code, stdout, _ = run(*args, "--help")
        assert code == 0 and "Usage" in stdout


def test_list_shows_what_is_registered() -> None:
    code, stdout, _ = run("list")
    assert code == 0
    for name in ("models", "small_cnn", "wrn28_10", "datasets", "mnist5k", "cifar10", "recipes", "standard"):
        assert name in stdout
    code, stdout, _ = run("list", "models")
    assert code == 0 and "mnist5k" not in stdout and "resnet20" in stdout
    assert run("list", "potatoes")[0] == 2


def test_train_then_eval_writes_checkpoint_and_json(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.safetensors"
    code, stdout, stderr = run("train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--out", ckpt, "-q")
    assert code == 0, stderr
    assert "test accuracy" in stdout and str(ckpt) in stdout
    meta = read_meta(ckpt)
    assert meta.architecture == "mlp" and meta.dataset == "digits" and meta.recipe["epochs"] == 1
    out = tmp_path / "eval.json"
    code, stdout, stderr = run("eval", "--checkpoint", ckpt, "--json", out)
    assert code == 0, stderr
    result = json.loads(out.read_text())
    assert {"accuracy", "n", "checkpoint", "data"} <= set(result)
    assert result["n"] == 359 and result["data"] == "digits"
    assert result["accuracy"] == pytest.approx(meta.clean_accuracy)


def test_eval_of_a_users_own_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mynet.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def build():
                return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "w.safetensors"
    save_file({"1.weight": torch.zeros(10, 64), "1.bias": torch.arange(10.0)}, str(weights))
    out = tmp_path / "e.json"
    args = ["eval", "--model", "mynet:build", "--weights", weights, "--data", "digits", "--mean", "0.5", "--std", "0.5"]
    code, _, stderr = run(*args, "--bounds", "0,255", "--json", out)
    assert code == 0, stderr
    result = json.loads(out.read_text())
    assert result["accuracy"] == pytest.approx(0.1, abs=0.02)  # always predicts class 9: one class in ten
    assert_user_error(*run("eval", "--model", "mynet:build", "--weights", weights), "--data is needed")
    assert_user_error(*run(*args, "--bounds", "0"), "--bounds takes two numbers")
    assert_user_error(*run(*args, "--bounds", "a,b"), "--bounds takes comma-separated numbers")


def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, digits_checkpoint: Path) -> None:
    assert_user_error(*run("eval", "--checkpoint", tmp_path / "missing.safetensors"), "not found")
    assert_user_error(*run("train", "--model", "smal_cnn", "--data", "digits"), 'Did you mean "small_cnn"')
    assert_user_error(*run("train", "--data", "mnist4k"), 'Did you mean "mnist5k"')
    assert_user_error(*run("train", "--data", "digits", "--epochs", "0"), "epochs must be at least 1")
    assert_user_error(*run("train", "--data", "digits", "--recipe", "magic"), "unknown training recipe")
    assert_user_error(*run("eval"), "give either --checkpoint")
    assert_user_error(*run("eval", "-c", digits_checkpoint, "--data", "mnist5k"), "expects (1, 8, 8)")
    assert_user_error(*run("eval", "-c", digits_checkpoint, "--device", "cuda:7"), "device")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(digits_checkpoint.read_bytes()[:1000])
    assert_user_error(*run("eval", "-c", broken), "corrupted or truncated")
    pickled = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, pickled)
    assert_user_error(*run("eval", "-c", pickled), "never unpickles")
    assert_user_error(*run("eval", "-c", digits_checkpoint, "--data", "npz:" + os.fspath(tmp_path / "x.npz")), "x.npz")


def test_usage_errors_exit_2() -> None:
    code, _, _ = run("eval", "--bogus")
    assert code == 2
    code, _, _ = run("train", "--epochs", "many")
    assert code == 2


MODEL_OPTIONS = ["--checkpoint", "--data", "--model", "--weights", "--mean", "--std", "--bounds", "--logits-key"]
DEPLOYED_OPTIONS = ["--onnx", "--endpoint", "--endpoint-batch", "--rate-limit", "--retries", "--timeout"]
MODEL_COMMANDS = ["eval", "attack", "certify", "mia", "ood", "poison", "protect", "bitflip", "extract", "sfl-extract"]


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_command_takes_a_model_the_same_way(command: str) -> None:
    """One declaration (`ModelSource`): the same options, in the same order, with the same defaults."""
    group = typer.main.get_command(app)
    params = group.get_command(group.context_class(group), command).params  # type: ignore[attr-defined]
    names = [p.opts[0] for p in params]
    model = [*MODEL_OPTIONS, *(DEPLOYED_OPTIONS if command in ("eval", "attack") else [])]
    at = names.index("--checkpoint")
    assert names[at : at + len(model)] == model and not set(DEPLOYED_OPTIONS) - set(model) & set(names)
    last = ["--ood-data", "--data-root", "--device"] if command in ("ood", "extract") else ["--data-root", "--device"]
    at = names.index(last[0])
    assert names[at : at + len(last)] == last and set(names[at + len(last) :]) <= {"--json", "--quiet", "--help"}
    defaults = {p.opts[0]: p.default for p in params}
    assert defaults["--bounds"] == "0,1" and defaults["--device"] == "auto" and defaults["--checkpoint"] is None


def test_a_model_source_sent_to_another_process_names_its_files_by_absolute_paths(
    digits_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(digits_checkpoint.parent)
    source = ModelSource(checkpoint=Path(digits_checkpoint.name), data_root=Path("data"))
    build = pickle.loads(pickle.dumps(source.resolved().target))  # what the Ray executor sends its workers
    monkeypatch.chdir(tmp_path)
    assert build.__self__ == ModelSource(
        checkpoint=digits_checkpoint.resolve(), data_root=digits_checkpoint.parent / "data"
    )
    target = build()
    assert target.model_name == digits_checkpoint.name and target.data == "digits"
    with pytest.raises(CheckpointError, match="not found"):
        source.target()  # the relative path named a file in the other working directory
