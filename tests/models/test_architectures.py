"""Every registered architecture: shapes, gradients, parameter counts, normalisation, errors."""

from __future__ import annotations

import inspect

import pytest
import torch

from bastion.core.errors import ConfigError, UnknownNameError
from bastion.core.ops import Normalize
from bastion.core.registry import MODELS
from bastion.models import build_model

NAMES = MODELS.names()
SHAPES = [(1, 28), (3, 32)]  # (in_channels, image_size): MNIST and CIFAR

# (name, in_channels, image_size, parameters for 10 classes). Where each reference count comes from is
# in the architecture's module docstring; each was checked against the reference code's own count.
PARAM_COUNTS = [
    ("small_cnn", 1, 28, 421_642),
    ("small_cnn", 3, 32, 545_098),
    ("lenet", 1, 28, 61_706),  # LeNet-5 with padding 2 on 28x28
    ("lenet", 3, 32, 62_006),
    ("mlp", 1, 28, 269_322),
    ("mlp", 3, 32, 855_050),
    ("resnet20", 3, 32, 269_722),  # akamaster/pytorch_resnet_cifar10, option A
    ("preact_resnet18", 3, 32, 11_172_170),  # locuslab fast_adversarial and robust_overfitting
    ("wrn28_10", 3, 32, 36_479_194),  # TRADES / RobustBench WideResNet(28, 10) without sub_block1
    ("vgg11_bn", 3, 32, 9_231_114),  # kuangliu/pytorch-cifar VGG("VGG11")
]

MIN_IMAGE_SIZE = {
    "small_cnn": 4,
    "lenet": 12,
    "mlp": 1,
    "resnet20": 8,
    "preact_resnet18": 8,
    "wrn28_10": 8,
    "vgg11_bn": 8,
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_architecture_is_listed_here() -> None:
    assert set(NAMES) == set(MIN_IMAGE_SIZE)


@pytest.mark.parametrize("name", NAMES)
def test_factory_takes_keyword_only_arguments_with_defaults(name: str) -> None:
    params = inspect.signature(MODELS.get(name)).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    assert all(p.default is not inspect.Parameter.empty for p in params)
    assert {"num_classes", "in_channels", "image_size", "mean", "std"} <= {p.name for p in params}


@pytest.mark.parametrize(("in_channels", "image_size"), SHAPES, ids=["1x28x28", "3x32x32"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward(name: str, in_channels: int, image_size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=in_channels, image_size=image_size)
    x = torch.rand(2, in_channels, image_size, image_size)
    logits = model(x)  # (2, 7)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())  # no parameter left out of the graph


@pytest.mark.parametrize(("name", "in_channels", "image_size", "expected"), PARAM_COUNTS)
def test_parameter_count(name: str, in_channels: int, image_size: int, expected: int) -> None:
    model = build_model(name, num_classes=10, in_channels=in_channels, image_size=image_size)
    assert n_params(model) == expected


@pytest.mark.parametrize("name", NAMES)
def test_normalisation_is_the_first_layer_and_takes_effect(name: str) -> None:
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    torch.manual_seed(0)
    model = build_model(name, mean=mean, std=std).eval()
    plain = build_model(name).eval()
    first = next(iter(model.children()))
    assert isinstance(first, Normalize)
    assert isinstance(next(iter(plain.children())), Normalize)
    torch.testing.assert_close(first.mean.flatten(), torch.tensor(mean))
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    missing, unexpected = plain.load_state_dict(weights, strict=False)
    assert sorted(missing) == ["normalize.mean", "normalize.std"] and not unexpected

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x_normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x_normalised))
        assert not torch.allclose(model(x), plain(x))  # the normalisation does something


@pytest.mark.parametrize(("name", "minimum"), sorted(MIN_IMAGE_SIZE.items()))
def test_smallest_image_size(name: str, minimum: int) -> None:
    model = build_model(name, in_channels=1, image_size=minimum)
    assert model(torch.rand(2, 1, minimum, minimum)).shape == (2, 10)
    if minimum > 1:
        with pytest.raises(ConfigError, match=rf"image_size must be an integer >= {minimum} .*got {minimum - 1}"):
            build_model(name, in_channels=1, image_size=minimum - 1)


def test_small_cnn_takes_8x8_digits() -> None:
    model = build_model("small_cnn", in_channels=1, image_size=8)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert n_params(model) == 320 + 18_496 + (64 * 2 * 2 * 128 + 128) + 1_290


def test_own_keywords_reach_the_architecture() -> None:
    assert n_params(build_model("mlp", in_channels=1, image_size=28, hidden=(32,))) == 784 * 32 + 32 + 33 * 10
    assert n_params(build_model("mlp", in_channels=1, image_size=28, hidden=())) == 784 * 10 + 10
    wrn_16_1 = build_model("wrn28_10", depth=16, widen_factor=1, drop_rate=0.3)
    assert n_params(wrn_16_1) == 175_066  # TRADES' WideResNet(depth=16, widen_factor=1) without sub_block1
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in wrn_16_1.modules())


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match='Did you mean "resnet20"'):
        build_model("resnet21")


@pytest.mark.parametrize("num_classes", [1, 0, -3, 2.5, True, "10"])
def test_bad_num_classes(num_classes: object) -> None:
    with pytest.raises(ConfigError, match=r"model 'small_cnn': num_classes must be an integer >= 2, got"):
        build_model("small_cnn", num_classes=num_classes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("resnet20", {"in_channels": 0}, r"in_channels must be an integer from 1 to 64, got 0"),
        ("resnet20", {"in_channels": 65}, r"in_channels must be an integer from 1 to 64, got 65"),
        ("resnet20", {"depth": 32}, r"model 'resnet20' takes no keyword 'depth'; its own keywords are: none besides"),
        ("mlp", {"width": 3}, r"takes no keyword 'width'; its own keywords are: hidden$"),
        ("wrn28_10", {"widen": 3}, r"its own keywords are: depth, widen_factor, drop_rate$"),
        ("mlp", {"hidden": 256}, r"hidden must be a sequence of layer widths"),
        ("mlp", {"hidden": (256, 0)}, r"hidden must be an integer >= 1 for every layer width, got 0"),
        ("wrn28_10", {"depth": 27}, r"depth must be 6n \+ 4.*got 27"),
        ("wrn28_10", {"widen_factor": 0}, r"widen_factor must be an integer >= 1, got 0"),
        ("wrn28_10", {"drop_rate": 1.0}, r"drop_rate must be a number in \[0, 1\), got 1.0"),
        ("lenet", {"mean": (0.5,)}, r"mean must be a sequence of 3 finite numbers.*got \(0.5,\)"),
        ("lenet", {"in_channels": 1, "std": (float("nan"),)}, r"std must be a sequence of 1 finite numbers"),
        ("lenet", {"std": (0.5, 0.0, 0.5)}, r"std must be positive"),
    ],
)
def test_bad_arguments_raise_one_clear_config_error(name: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_model(name, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
