"""The ownership methods' claims at small scale on `mnist5k` with `small_cnn` (slow: about a dozen small
models are trained once per module): the watermark proves the marked model and its FTAL copy and never
an independent model; BlackMarks returns its signature from the marked model and noise from independent
ones; dataset inference claims the source model and a distilled copy, and not a model trained on the
other half of the data."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.core import Victim
from bastion.data import Dataset
from bastion.defenses.ownership import BlackMarks, DatasetInference, Watermark
from bastion.models import build_model
from bastion.train import Hooks, TrainConfig, fit
from bastion.train.surgery import fine_tune

pytestmark = pytest.mark.slow


@dataclass
class Zoo:
    data: Dataset
    owner: nn.Module  # clean, on the first half of the training split
    other_half: nn.Module  # clean, on the second half
    independent: list[nn.Module]  # clean, on the first half, other seeds


def _victim(model: nn.Module) -> Victim:
    return Victim(model, input_shape=(1, 28, 28), num_classes=10)


def _train(data: Dataset, x: Tensor, y: Tensor, seed: int, *, epochs: int = 3, hooks: Hooks | None = None) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=28, mean=data.mean, std=data.std)
    fit(model, x, y, TrainConfig(epochs=epochs, lr=3e-3, augment="none", seed=seed), hooks=hooks)
    return model.eval()


@pytest.fixture(scope="module")
def zoo(mnist_data: Dataset) -> Zoo:
    d = mnist_data
    xa, ya, xb, yb = d.x_train[:2000], d.y_train[:2000], d.x_train[2000:], d.y_train[2000:]
    return Zoo(
        data=d,
        owner=_train(d, xa, ya, 0),
        other_half=_train(d, xb, yb, 4),
        independent=[_train(d, xa, ya, s) for s in (1, 2, 3)],
    )


def test_watermark_proves_the_marked_model_and_its_ftal_copy_only(zoo: Zoo) -> None:
    d = zoo.data
    wm = Watermark(n=50, wm_batch=4, seed=0)
    key = wm.make_key((1, 28, 28), 10)
    marked = _train(d, d.x_train[:2000], d.y_train[:2000], 5, hooks=Hooks(batch=wm.batch_edit(key)))
    ftal, _ = fine_tune(marked, d.x_train[2000:], d.y_train[2000:], mode="ftal", epochs=2)  # held-out data
    x_t, y_t = d.x_test, d.y_test
    for model in (marked, ftal):
        res = wm.verify(_victim(model), key, x_test=x_t, y_test=y_t)
        assert res.p_value < 1e-10 and res.claimed and res.clean_accuracy > 0.93
    for model in zoo.independent:
        res = wm.verify(_victim(model), key)
        assert res.p_value > 0.01 and not res.claimed and res.queries.sum() == 50


def test_blackmarks_signature_reads_back_from_the_marked_model_only(zoo: Zoo) -> None:
    d = zoo.data
    xa, ya = d.x_train[:2000], d.y_train[:2000]
    bm = BlackMarks(bits=16, seed=0)
    owner = _victim(zoo.owner)
    bits = bm.encode(owner, xa, ya)
    key = bm.make_key(owner, xa, ya, bits, references=[_victim(zoo.other_half)])
    marked, _ = bm.embed(zoo.owner, xa, ya, key)
    res = bm.verify(_victim(marked), key, x_test=d.x_test, y_test=d.y_test)
    assert res.ber == 0.0 and res.claimed and res.p_value == pytest.approx(2**-16)
    base = float((owner.predict(d.x_test) == d.y_test).double().mean())
    assert res.clean_accuracy is not None and res.clean_accuracy > base - 0.01  # embedding costs < 1 point
    bers = [bm.verify(_victim(m), key).ber for m in zoo.independent]
    assert all(b is not None and 0.25 <= b <= 0.75 for b in bers), bers  # about a coin flip per bit
    assert not any(bm.verify(_victim(m), key).claimed for m in zoo.independent)


def _distil(data: Dataset, teacher: nn.Module, x: Tensor, seed: int, epochs: int) -> nn.Module:
    """A student trained on the teacher's soft labels of `x`."""
    with torch.no_grad():
        soft = torch.softmax(teacher(x), dim=1)

    def loss(model: nn.Module, xb: Tensor, idx: Tensor) -> Tensor:
        return F.kl_div(F.log_softmax(model(xb), dim=1), soft[idx], reduction="batchmean")

    # the "labels" are the images' positions, so the loss finds each image's soft label
    return _train(data, x, torch.arange(x.shape[0]), seed, epochs=epochs, hooks=Hooks(loss=loss))


@pytest.mark.xfail(
    strict=True,
    reason="not met on mnist5k: boundary distances barely differ between training and unseen digits; "
    "benchmarks/ownership_mnist5k.py measured, with Blind Walk, source p 0.14 and 0.54, distilled 0.87 and 0.48, "
    "other half 0.35 and 0.0088 (seeds 0, 1), and with MinGD source 0.76, 0.92, 0.87 (seeds 0, 1, 2)",
)
def test_dataset_inference_claims_the_source_and_a_distilled_copy_not_the_other_half(zoo: Zoo) -> None:
    d = zoo.data
    xa, ya, xb = d.x_train[:2000], d.y_train[:2000], d.x_train[2000:]
    di = DatasetInference(m=20, scale=8.0, max_steps=25, seed=0)
    state = di.fit(_victim(zoo.owner), xa[:100], ya[:100], d.x_test[:100], d.y_test[:100])
    test = (xa[100:140], ya[100:140], d.x_test[100:140], d.y_test[100:140])
    other = di.verify(_victim(zoo.other_half), state, *test)
    assert other.queries.max() <= 3 * 10 * 25  # Blind Walk's per-point budget
    source = di.verify(_victim(zoo.owner), state, *test)
    student = di.verify(_victim(_distil(d, zoo.owner, xb, 7, epochs=3)), state, *test)
    assert source.p_value < 0.01 and student.p_value < 0.01 and other.p_value > 0.05, (
        source.p_value,
        student.p_value,
        other.p_value,
    )
