import json
import sys

import pytest
import torch

from bastion.core import (
    AttackResult,
    ConfigError,
    Registry,
    ThreatModel,
    UnknownNameError,
    make_generator,
    perturbation_norms,
)


def test_threat_model_validates() -> None:
    tm = ThreatModel(norm="l2", eps=1.5, max_queries=100)
    assert tm.to_dict()["bounds"] == [0.0, 1.0]
    with pytest.raises(ConfigError, match="norm"):
        ThreatModel(norm="l3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="eps"):
        ThreatModel(eps=-1)
    with pytest.raises(ConfigError, match="bounds"):
        ThreatModel(bounds=(1.0, 0.0))
    with pytest.raises(ConfigError, match="max_queries"):
        ThreatModel(max_queries=0)


def test_registry_rejects_duplicates_and_suggests() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("small_cnn")(1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("small_cnn")(2)
    with pytest.raises(UnknownNameError, match='Did you mean "small_cnn"') as info:
        reg.get("smal_cnn")
    assert "Known: small_cnn" in str(info.value)
    assert reg.names() == ["small_cnn"] and "small_cnn" in reg


def test_registry_families_group_entries_and_restrict_lookups() -> None:
    reg: Registry[int] = Registry("attack")
    reg.register("pgd", family="evasion")(1)
    reg.register("square", family="evasion")(2)
    reg.register("loss-threshold", family="membership")(3)
    assert reg.families() == ["evasion", "membership"] and reg.family("loss-threshold") == "membership"
    assert reg.names("evasion") == ["pgd", "square"] and reg.names() == ["loss-threshold", "pgd", "square"]
    assert reg.get("pgd", family="evasion") == 1
    with pytest.raises(
        UnknownNameError, match="unknown evasion attack 'loss-threshold' \\('loss-threshold' is in the membership"
    ):
        reg.get("loss-threshold", family="evasion")


def test_generator_is_seeded() -> None:
    a = torch.rand(5, generator=make_generator(3))
    b = torch.rand(5, generator=make_generator(3))
    c = torch.rand(5, generator=make_generator(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_attack_result_metrics_and_json() -> None:
    x = torch.zeros(4, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = 0.3
    x_adv[1, 0, 1, 1] = -0.1
    norms = perturbation_norms(x, x_adv)
    assert norms["linf"].tolist() == pytest.approx([0.3, 0.1, 0.0, 0.0])
    assert norms["l0"].tolist() == [1, 1, 0, 0]
    y = torch.tensor([0, 1, 2, 3])
    y_adv = torch.tensor([5, 1, 2, 9])  # sample 3 was already wrong when clean
    result = AttackResult(
        attack="toy",
        params={"steps": 1},
        threat=ThreatModel(eps=0.3),
        access="white-box",
        seed=0,
        x_adv=x_adv,
        y=y,
        y_adv=y_adv,
        clean_correct=torch.tensor([True, True, True, False]),
        success=y_adv != y,
        queries=torch.tensor([0, 2, 4, 0]),
        l2=norms["l2"],
        linf=norms["linf"],
        seconds=0.5,
    )
    assert result.robust_accuracy == pytest.approx(0.5)
    assert result.clean_accuracy == pytest.approx(0.75)
    assert result.success_rate == pytest.approx(1 / 3)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["queries_max"] == 4 and d["queries_median"] == pytest.approx(1.0)
    assert d["linf_max"] == pytest.approx(0.3) and d["l2_median"] == pytest.approx(0.3)
    assert d["per_sample"]["success"] == [True, False, False, True]


def test_a_missing_extra_is_one_line_naming_the_package_and_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.core.errors import ConfigError, MissingExtraError, require_extra

    assert require_extra("json", extra="none", purpose="reading").dumps([1]) == "[1]"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails as if not installed
    with pytest.raises(MissingExtraError) as info:
        require_extra("onnxruntime", extra="deploy", purpose="an ONNX model")
    assert str(info.value) == "an ONNX model needs onnxruntime, which is not installed: pip install 'bastion[deploy]'"
    assert isinstance(info.value, ConfigError) and info.value.exit_code == 2
