"""The results database on SQLite and PostgreSQL: one transaction per result, resumable runs."""

from __future__ import annotations

import pytest

from bastion.core import StoreError
from bastion.store import Artifact, RunSpec, Store


def _spec(identity: str = "id-1") -> RunSpec:
    return RunSpec(
        identity=identity,
        plan_name="tiny",
        plan_sha256="ab" * 32,
        plan_text="scenarios: []",
        data="digits",
        split_seed=0,
        seed=1,
        sample_indices=[0, 1, 2],
        clean_accuracy=0.9,
        versions={"bastion": "0", "torch": "2", "python": "3.11"},
        device="cpu",
        host="here",
    )


def _add(store: Store, run_id: int, key: str, artifacts: tuple[Artifact, ...] = ()) -> None:
    store.add_result(
        run_id,
        key=key,
        position=0,
        family="evasion",
        method="pgd",
        spec={"key": key, "eps": 0.3, "norm": "linf"},
        metrics={"robust_accuracy": 0.5, "l2_median": None},
        record={"per_sample": {"y": [1, 2]}, "extra": {"curve": [0.1, 0.2]}},
        warnings=["[x] careful"],
        seconds=1.5,
        artifacts=list(artifacts),
    )


def test_round_trip(store: Store) -> None:
    model = store.model("c" * 64, "net.safetensors", {"architecture": "small_cnn", "input_shape": [1, 8, 8]})
    assert store.model("c" * 64, "other-name", {}) == model  # a model is its hash
    run_id, resumed = store.open_run(model, _spec())
    assert not resumed
    png = bytes(range(256)) * 4
    _add(store, run_id, "pgd", (Artifact("a.png", "image/png", png, "7 → 3"),))
    run = store.run(run_id)
    assert run.status == "running" and run.sample_indices == [0, 1, 2] and run.model.meta["input_shape"] == [1, 8, 8]
    (res,) = run.results
    assert res.metrics == {"robust_accuracy": 0.5, "l2_median": None} and res.warnings == ["[x] careful"]
    assert res.record["extra"]["curve"] == [0.1, 0.2]
    assert res.artifacts[0].data == png and res.artifacts[0].caption == "7 → 3"
    store.finish_run(run_id)
    done = store.run(run_id)
    assert done.status == "finished" and done.ended_at is not None


def test_unfinished_run_is_resumed_and_finished_one_is_not(store: Store) -> None:
    model = store.model("d" * 64, "m", {})
    first, _ = store.open_run(model, _spec())
    _add(store, first, "fgsm")
    again, resumed = store.open_run(model, _spec())
    assert (again, resumed) == (first, True) and store.finished_keys(first) == {"fgsm"}
    other, resumed_other = store.open_run(model, _spec("id-2"))
    assert other != first and not resumed_other
    store.finish_run(first)
    fresh, resumed_fresh = store.open_run(model, _spec())
    assert fresh not in (first, other) and not resumed_fresh


def test_a_result_is_stored_once(store: Store) -> None:
    run_id, _ = store.open_run(store.model("e" * 64, "m", {}), _spec())
    _add(store, run_id, "pgd", (Artifact("a.png", "image/png", b"1"),))
    with pytest.raises(StoreError, match="already holds a result for scenario 'pgd'"):
        _add(store, run_id, "pgd", (Artifact("b.png", "image/png", b"2"),))
    run = store.run(run_id)
    assert len(run.results) == 1 and [a.name for a in run.results[0].artifacts] == ["a.png"]  # nothing half-written


def test_missing_run_names_the_stored_ones(store: Store) -> None:
    with pytest.raises(StoreError, match=r"no run 7 .*the database holds no run yet"):
        store.run(7)
    run_id, _ = store.open_run(store.model("f" * 64, "m", {}), _spec())
    with pytest.raises(StoreError, match=f"runs stored: {run_id}"):
        store.run(run_id + 5)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense://x", "is not a usable database URL"),
        ("not a url", "is not a usable database URL"),
        ("postgresql+psycopg://nobody:secret@127.0.0.1:1/none", "cannot open the database"),
    ],
)
def test_bad_urls_are_one_line_errors(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as info:
        Store(url)
    assert "secret" not in str(info.value) and "\n" not in str(info.value)
