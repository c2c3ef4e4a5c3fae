import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bastion.core import CheckpointError
from bastion.models import build_model
from bastion.models.checkpoint import CheckpointMeta, load_checkpoint, read_meta, save_checkpoint


def meta(**kw: object) -> CheckpointMeta:
    base: dict[str, object] = {
        "architecture": "small_cnn",
        "arch_kwargs": {"num_classes": 10, "in_channels": 1, "image_size": 8, "mean": [0.3], "std": [0.4]},
        "dataset": "digits",
        "split_seed": 3,
        "num_classes": 10,
        "input_shape": (1, 8, 8),
        "mean": (0.3,),
        "std": (0.4,),
        "recipe": {"name": "standard", "epochs": 1},
        "clean_accuracy": 0.5,
    }
    base.update(kw)
    return CheckpointMeta(**base)  # type: ignore[arg-type]


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    m = meta()
    model = build_model("small_cnn", **m.arch_kwargs).eval()
    return save_checkpoint(tmp_path / "ck.safetensors", model, m), model


def test_round_trip_gives_the_same_model_and_metadata(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    loaded, m = load_checkpoint(path)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    assert m.split_seed == 3 and m.input_shape == (1, 8, 8) and m.mean == (0.3,) and m.clean_accuracy == 0.5
    assert m.recipe["name"] == "standard" and m.bastion_version and m.torch_version
    assert read_meta(path) == m
    assert [p.name for p in path.parent.iterdir()] == ["ck.safetensors"]  # no temporary file left


def test_truncated_file_is_reported(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(path)


def test_garbage_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"not a checkpoint at all" * 4)
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        read_meta(path)


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(Path(os.environ["BASTION_TEST_MARKER"])),))


def test_pickled_files_are_refused_and_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("BASTION_TEST_MARKER", str(marker))
    raw = tmp_path / "evil.safetensors"
    raw.write_bytes(pickle.dumps(_Boom(), protocol=2))
    zipped = tmp_path / "evil.pt"
    torch.save({"x": _Boom()}, zipped)
    for path in (raw, zipped):
        with pytest.raises(CheckpointError, match="never unpickles"):
            load_checkpoint(path)
    assert not marker.exists()


def test_weights_without_metadata_point_to_the_external_route(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match=r"--model package\.module:factory"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_architecture(tmp_path: Path) -> None:
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=8)
    path = save_checkpoint(tmp_path / "ck.safetensors", model, meta())  # metadata says small_cnn
    with pytest.raises(CheckpointError, match="do not fit architecture 'small_cnn'"):
        load_checkpoint(path)


def test_missing_file_and_bad_metadata(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.safetensors")
    path = tmp_path / "odd.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"bastion": json.dumps({"format": "other/9"})})
    with pytest.raises(CheckpointError, match="format"):
        read_meta(path)
