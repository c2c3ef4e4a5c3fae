import os
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from bastion.core import CheckpointError, ConfigError, ModelError, Victim
from bastion.models.external import ExternalModel, import_factory, load_external

USER_MODULE = '''
import torch
from torch import nn


class Net(nn.Module):
    """Expects inputs normalised with mean 0.5, std 0.25, on a 0..255 scale if asked."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


class DictNet(Net):
    def forward(self, x):
        return {"logits": super().forward(x), "features": x}


class TupleNet(Net):
    def forward(self, x):
        return x.flatten(1), super().forward(x)


def make():
    return Net()


def broken():
    raise RuntimeError("no GPU")


def not_a_model():
    return 42


CONSTANT = 3
'''


@pytest.fixture(autouse=True)
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "usermodels"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))


def x4() -> torch.Tensor:
    return torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def test_normalisation_and_bounds_are_applied_before_the_model() -> None:
    raw = import_factory("usermodels.nets:Net")
    wrapped = load_external("usermodels.nets:Net", mean=[127.5], std=[64.0], bounds=(0, 255))
    x = x4()
    assert torch.allclose(wrapped(x), raw((x * 255 - 127.5) / 64.0), atol=1e-6)
    minus_one = load_external("usermodels.nets:Net", bounds=(-1, 1))
    assert torch.allclose(minus_one(x), raw(2 * x - 1), atol=1e-6)


def test_logits_key_for_dicts_tuples_and_clear_errors() -> None:
    plain = import_factory("usermodels.nets:Net")
    x = x4()
    as_dict = load_external("usermodels.nets:DictNet", logits_key="logits")
    as_tuple = load_external("usermodels.nets:TupleNet", logits_key="1")
    assert torch.allclose(as_dict(x), plain(x)) and torch.allclose(as_tuple(x), plain(x))
    with pytest.raises(ModelError, match=r"keys \['features', 'logits'\].*--logits-key"):
        Victim(load_external("usermodels.nets:DictNet")).logits(x)
    with pytest.raises(ModelError, match="--logits-key INDEX"):
        load_external("usermodels.nets:TupleNet")(x)
    with pytest.raises(ModelError, match='Did you mean "logits"'):
        load_external("usermodels.nets:DictNet", logits_key="logit")(x)
    with pytest.raises(ModelError, match="index below 2"):
        load_external("usermodels.nets:TupleNet", logits_key="5")(x)


def test_weights_from_safetensors_and_weights_only_pt(tmp_path: Path) -> None:
    reference = nn.Linear(16, 3)
    state = {f"fc.{k}": v for k, v in reference.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pt")
    x = x4()
    for name in ("w.safetensors", "w.pt"):
        model = load_external("usermodels.nets:Net", weights=tmp_path / name)
        assert torch.allclose(model(x), reference(x.flatten(1)))


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    save_file({"other.weight": torch.zeros(3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit the model: missing"):
        load_external("usermodels.nets:Net", weights=tmp_path / "w.safetensors")
    save_file({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(3)}, str(tmp_path / "s.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_external("usermodels.nets:Net", weights=tmp_path / "s.safetensors")


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (os.environ["BASTION_TEST_MARKER"],))


def test_pt_with_arbitrary_objects_is_refused_and_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("BASTION_TEST_MARKER", str(marker))
    torch.save({"fc.weight": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot be read as plain weights"):
        load_external("usermodels.nets:Net", weights=tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("usermodels.nets", ConfigError, "package.module:factory"),
        ("usermodels.nope:make", ModelError, "cannot import 'usermodels.nope'"),
        ("usermodels.nets:mak", ModelError, 'Did you mean "make"'),
        ("usermodels.nets:CONSTANT", ModelError, "not a class or function"),
        ("usermodels.nets:broken", ModelError, "RuntimeError: no GPU"),
        ("usermodels.nets:not_a_model", ModelError, "not a torch.nn.Module"),
    ],
)
def test_import_errors_are_one_clear_line(spec: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        import_factory(spec)


def test_adapter_settings_rebuild_the_same_adapter() -> None:
    model = load_external("usermodels.nets:Net", mean=[0.5], std=[0.25], bounds=(0, 255), logits_key=None)
    assert isinstance(model, ExternalModel)
    settings = model.adapter_settings()
    assert settings == {"mean": [0.5], "std": [0.25], "bounds": [0.0, 255.0], "logits_key": None}
    again = load_external("usermodels.nets:Net", **settings)
    x = x4()
    assert torch.allclose(again(x), model(x))
