"""`--device` everywhere: every command that builds or runs a model takes the one shared option, checks
the device before any work, and runs where it is told. The CUDA tests run where a GPU is visible."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from bastion.cli.app import app
from bastion.data import load_dataset
from bastion.defenses.detect.ood import KNN
from bastion.defenses.ownership.base import key_batch_edit
from bastion.models import build_model
from bastion.store import Store
from bastion.train import TrainConfig, fit

runner = CliRunner()
CUDA = torch.cuda.is_available()

# every command that loads, trains or attacks a model, with the arguments it needs besides the model
MODEL_COMMANDS: dict[tuple[str, ...], list[str]] = {
    ("train",): ["--data", "digits", "--epochs", "1", "--out", "never.safetensors"],
    ("eval",): [],
    ("attack",): ["fgsm"],
    ("certify",): ["--sigma", "0.25"],
    ("mia",): [],
    ("ood",): [],
    ("poison",): ["badnets"],
    ("protect",): ["random-noise"],
    ("bitflip",): ["random-flip"],
    ("extract",): [],
    ("sfl-extract",): [],
    ("ownership",): [],
    ("watermark", "embed"): [],
    ("watermark", "verify"): ["--key", "KEY"],
    ("audit",): [],
}


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def commands() -> dict[tuple[str, ...], Any]:
    """Every command of the app by its path (typer's click commands, walked by what they hold)."""

    def walk(cmd: Any, path: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
        if hasattr(cmd, "commands"):
            return {k: v for name, sub in cmd.commands.items() for k, v in walk(sub, (*path, name)).items()}
        return {path: cmd}

    return walk(typer.main.get_command(app), ())


def one_line_error(code: int, stderr: str, match: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], stderr


def test_every_model_command_takes_the_shared_device_option() -> None:
    found = {path: c for path, c in commands().items() if any(p.name == "device" for p in c.params)}
    assert set(found) == set(MODEL_COMMANDS)
    for path, c in found.items():
        (opt,) = [p for p in c.params if p.name == "device"]
        assert opt.opts == ["--device"] and not opt.is_flag, path
        assert opt.default == "auto" and opt.help == "auto, cpu, cuda or cuda:N", path


@pytest.mark.skipif(CUDA, reason="checks the refusal of a CUDA device where none is visible")
@pytest.mark.parametrize("path", list(MODEL_COMMANDS), ids=" ".join)
def test_an_absent_cuda_is_one_line_before_any_work(
    path: tuple[str, ...], digits_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if path == ("watermark", "verify"):
        (tmp_path / "KEY").write_bytes(b"")  # checked for, but read only once the device is known
    model = [] if path == ("train",) else ["--checkpoint", digits_checkpoint]
    code, _, stderr = run(*path, *MODEL_COMMANDS[path], *model, "--device", "cuda")
    one_line_error(code, stderr, "CUDA is not available here; use --device cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["KEY"] if path == ("watermark", "verify") else [])


@pytest.mark.skipif(CUDA, reason="checks the refusal of a CUDA device where none is visible")
def test_the_default_audit_model_is_not_trained_on_an_absent_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run("audit", "--data", "digits", "--device", "cuda:1", "--db", f"sqlite:///{tmp_path}/r.db")
    one_line_error(code, stderr, "device 'cuda:1' asked for")
    assert not (tmp_path / "checkpoints").exists()


def test_a_device_that_does_not_exist_is_one_line(digits_checkpoint: Path) -> None:
    for path in (("eval",), ("attack",), ("ood",)):
        code, _, stderr = run(*path, *MODEL_COMMANDS[path], "-c", digits_checkpoint, "--device", "gpu0")
        one_line_error(code, stderr, "unknown device 'gpu0'; use auto, cpu, cuda or cuda:N")


def test_a_cuda_index_past_the_visible_devices_is_one_line(
    digits_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a machine with one GPU, cuda:7 is refused up front (it used to fail later with a traceback)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for path in (("eval",), ("attack",), ("audit",)):
        code, _, stderr = run(*path, *MODEL_COMMANDS[path], "-c", digits_checkpoint, "--device", "cuda:7")
        one_line_error(code, stderr, "device 'cuda:7' asked for, but 1 CUDA device(s) are visible here: use cuda:0")


def test_device_cpu_runs(digits_checkpoint: Path, tmp_path: Path) -> None:
    code, _, stderr = run("eval", "-c", digits_checkpoint, "--device", "cpu", "--json", tmp_path / "e.json")
    assert code == 0, stderr
    assert json.loads((tmp_path / "e.json").read_text())["n"] > 0
    code, stdout, stderr = run("attack", "fgsm", "-c", digits_checkpoint, "--n", "20", "--device", "cpu")
    assert code == 0 and "robust" in stdout, stderr
    code, stdout, stderr = run("ood", "msp", "-c", digits_checkpoint, "--n", "50", "--device", "cpu")
    assert code == 0 and "msp" in stdout, stderr


def test_the_progress_loss_is_the_epochs_loss() -> None:
    """The loop reads its running loss every few steps only (no device sync per batch): what it shows at
    the end of an epoch is still the epoch's mean loss."""
    ds = load_dataset("digits")
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=8)
    events: list = []
    history = fit(
        model, ds.x_train[:500], ds.y_train[:500], TrainConfig(epochs=2, batch_size=20), progress=events.append
    )
    last = [e for e in events if e.task == "train"]
    assert len(last) == 50 and all(isinstance(e.info["loss"], float) for e in last)
    assert last[24].info["loss"] == pytest.approx(history.epochs[0].train_loss, rel=1e-12)
    assert last[-1].info["loss"] == pytest.approx(history.epochs[1].train_loss, rel=1e-12)
    # read at the first step of each epoch, every 10th step and each epoch's last: steps 10 to 19 show step 10's
    assert last[9].info["loss"] == last[18].info["loss"] != last[19].info["loss"] == last[20].info["loss"]


# --- on a GPU ------------------------------------------------------------------------------------------
cuda_only = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@cuda_only
def test_commands_run_on_cuda_and_agree_with_cpu(digits_checkpoint: Path, tmp_path: Path) -> None:
    found = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.json"
        code, _, stderr = run(
            "attack", "fgsm", "-c", digits_checkpoint, "--n", "100", "--device", device, "--json", out
        )
        assert code == 0, stderr
        found[device] = json.loads(out.read_text())
    assert found["cuda"]["clean_accuracy"] == found["cpu"]["clean_accuracy"]
    cpu_ok, cuda_ok = (sum(found[d]["per_sample"]["success"]) for d in ("cpu", "cuda"))
    assert abs(cpu_ok - cuda_ok) <= 2  # FGSM: one signed step, a sign may differ on float ties only
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: gpu\nn: 40\nscenarios:\n  - attack: pgd\n    eps: 0.2\n  - detector: knn\n    n: 100\n")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    code, _, stderr = run("audit", "-c", digits_checkpoint, "--plan", plan, "--db", db, "--device", "cuda", "-q")
    assert code == 0, stderr
    with Store(db) as store:
        stored = store.run(1)
    assert stored.device.startswith("cuda") and [r.key for r in stored.results] == ["pgd", "knn"]


@cuda_only
def test_library_paths_stay_on_the_device(digits_checkpoint: Path) -> None:
    from bastion.cli._target import ModelSource

    target = ModelSource(checkpoint=digits_checkpoint, device="cuda").target()
    assert target.victim.device.type == "cuda"
    x_train, y_train = target.dataset.x_train[:300], target.dataset.y_train[:300]
    knn = KNN(k=5)
    state = knn.fit(target.victim, x_train, y_train)
    assert state.device.type == "cuda"
    x = target.dataset.x_test[:50]
    result = knn.run(target.victim, x, torch.rand_like(x), state=state)
    assert result.scores.device.type == "cpu" and result.scores.dtype == torch.float64
    edit = key_batch_edit(torch.rand(4, 1, 8, 8), torch.arange(4), per_batch=2, seed=0)
    xb, yb = edit(torch.zeros(8, 1, 8, 8, device="cuda"), torch.zeros(8, dtype=torch.long, device="cuda"), None)
    assert xb.device.type == yb.device.type == "cuda" and xb.shape[0] == 10
