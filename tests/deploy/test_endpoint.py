"""HTTP endpoints: a model served on loopback answers as in-process; a failed request is retried and counted
once; a slow one times out and is retried, or fails with a clear error that costs no budget; budgets hold."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from bastion.attacks.evasion.hsja import HSJA
from bastion.attacks.evasion.square import Square
from bastion.core import ConfigError, EndpointError, QueryBudgetExceeded, ThreatModel, Victim
from bastion.deploy import EndpointModel

Serve = Callable[..., Any]  # conftest's `serve`: starts a FaultyServer

pytest.importorskip("httpx")


@pytest.mark.parametrize("output", ["logits", "probs", "labels"])
def test_endpoint_answers_as_the_model(
    output: str, serve: Serve, mnist_victim: Victim, mnist_test: tuple[Tensor, Tensor]
) -> None:
    x = mnist_test[0][:100]
    server = serve(output)
    with EndpointModel(server.url, batch_size=32) as model:
        assert model.reveals == {"labels": "label"}.get(output, output) and model.num_classes == 10
        assert model.info["dataset"] == "mnist5k" and model.input_shape == (1, 28, 28)
        assert torch.equal(model.predict(x), mnist_victim.predict(x))
        assert model.stats.requests == 1 + 4 and server.posts == 4  # GET, then 100 images in 4 requests
        if output == "logits":  # float32 survives the JSON round trip exactly, as nested lists or base64
            assert model.encoding == "f32-base64"  # the reference server offers f32-base64 and the client takes it
            assert torch.equal(model.logits(x), mnist_victim.logits(x))
            with EndpointModel(server.url, encoding="json") as plain:
                assert torch.equal(plain.logits(x), mnist_victim.logits(x))
        if output == "probs":  # log-probabilities are the logits up to a per-row constant
            z, ref = model.logits(x), mnist_victim.logits(x)
            assert torch.allclose(z - z[:, :1], ref - ref[:, :1], atol=1e-4)


def test_failed_requests_are_retried_and_counted_once(serve: Serve, mnist_test: tuple[Tensor, Tensor]) -> None:
    x = mnist_test[0][:8]
    server = serve("probs", fail_every=3)
    model = EndpointModel(server.url, batch_size=2, backoff=0.001)
    oracle = model.oracle(8, output="probs", max_queries=3)
    for _ in range(3):
        out = oracle.query(x)  # 4 requests each, every third of them answered 503 and retried
        assert out.shape == (8, 10) and bool(torch.isfinite(out).all())
    with pytest.raises(QueryBudgetExceeded):
        oracle.query(x[:1], torch.tensor([5]))
    assert oracle.queries.tolist() == [3] * 8  # each answered row once, however many times it was sent
    assert server.failed >= 4 and model.stats.retries == server.failed
    assert server.rows == model.stats.rows == 24  # the server answered each row once, too


def test_square_through_a_flaky_endpoint_matches_in_process(
    serve: Serve, mnist_victim: Victim, mnist_test: tuple[Tensor, Tensor]
) -> None:
    x, y = mnist_test[0][:6], mnist_test[1][:6]
    atk = Square(threat=ThreatModel(eps=0.3, max_queries=100), n_queries=100, seed=1)
    server = serve("logits", fail_every=3)
    served = atk.run(EndpointModel(server.url, backoff=0.001), x, y)
    local = atk.run(mnist_victim, x, y)
    assert server.failed > 0 and int(served.queries.max()) <= 100
    assert torch.equal(served.x_adv, local.x_adv) and torch.equal(served.queries, local.queries)
    assert torch.equal(served.success, local.success)


def test_label_endpoint_serves_decision_attacks_only(
    serve: Serve, mnist_victim: Victim, mnist_test: tuple[Tensor, Tensor]
) -> None:
    x, y = mnist_test[0][:4], mnist_test[1][:4]
    model = EndpointModel(serve("labels").url)
    with pytest.raises(ConfigError, match="labels only"):
        Square(threat=ThreatModel(eps=0.3)).run(model, x, y)
    atk = HSJA(threat=ThreatModel(norm="l2", eps=2.0, max_queries=120), steps=4, init_evals=20, seed=2)
    served, local = atk.run(model, x, y), atk.run(mnist_victim, x, y)
    assert torch.equal(served.x_adv, local.x_adv) and torch.equal(served.queries, local.queries)
    assert int(served.queries.max()) <= 120


def test_slow_answers_time_out_and_are_retried_or_fail_clearly(serve: Serve, mnist_test: tuple[Tensor, Tensor]) -> None:
    x = mnist_test[0][:2]
    once = serve("probs", delay=1.0, slow=(1,))  # the first POST stalls past the timeout, its retry does not
    model = EndpointModel(once.url, timeout=0.3, backoff=0.001)
    oracle = model.oracle(2, output="label", max_queries=5)
    oracle.query(x)
    assert oracle.queries.tolist() == [1, 1] and model.stats.retries == 1
    always = serve("probs", delay=0.6)  # every POST stalls (the GET does not)
    slow = EndpointModel(always.url, timeout=0.2, retries=1, backoff=0.001, num_classes=10)
    oracle = slow.oracle(2, output="probs", max_queries=5)
    with pytest.raises(EndpointError, match=r"failed 2 time\(s\); last: no answer within 0.2 s"):
        oracle.query(x)
    assert oracle.queries.tolist() == [0, 0] and slow.stats.failures == 1  # an unanswered query costs nothing


def test_rate_limit_spaces_requests(serve: Serve, mnist_test: tuple[Tensor, Tensor]) -> None:
    model = EndpointModel(serve("labels").url, batch_size=1, rate_limit=20.0)
    start = time.perf_counter()
    model.predict(mnist_test[0][:5])
    assert time.perf_counter() - start >= 4 / 20 - 0.01 and model.stats.requests == 1 + 5


def test_unreachable_or_bad_endpoints_raise_typed_errors(serve: Serve) -> None:
    with pytest.raises(EndpointError, match="failed 2 time"):
        EndpointModel("http://127.0.0.1:9/", retries=1, backoff=0.001, timeout=1.0)
    with pytest.raises(ConfigError, match="http:// or https://"):
        EndpointModel("ftp://example.org/model")
    with pytest.raises(ConfigError, match="takes inputs of shape"):
        EndpointModel(serve("labels").url, input_shape=(3, 32, 32))
    labels = serve("labels")
    with EndpointModel(labels.url) as model, pytest.raises(EndpointError, match=r"HTTP 400.*must lie in"):
        model.answer(torch.full((1, 1, 28, 28), 2.0))  # a client error is not retried
    assert model.stats.retries == 0 and model.stats.requests == 2
    plain = serve("labels")
    plain.info["encodings"] = ["json"]
    with pytest.raises(ConfigError, match="does not list f32-base64"):
        EndpointModel(plain.url, encoding="f32-base64")
