"""Fixtures of the dashboard's tests: a store on each backend filled once by two tiny real audits of one
model (plan seeds 1 and 2), plus a hand-made run of a model and a scenario whose names hold HTML."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from bastion.cli.app import app
from bastion.store import Artifact, RunSpec, Store

POSTGRES = os.environ.get("BASTION_TEST_POSTGRES")  # set by .ci/run, which starts a server on loopback
HOSTILE = "<script>alert(1)</script>"
# Own schema on the shared server, so that the store tests (which drop the public tables) leave it be.
SCHEMA = "bastion_web_test"

PLAN = """\
name: web-{seed}
description: the dashboard tests' audit
n: 40
seed: {seed}
scenarios:
  - attack: fgsm
    eps: [0.1, 0.3]
  - attack: pgd
    eps: 0.2
    params: {{steps: 5}}
  - attack: modified-entropy
    n: 100
"""


@dataclass(frozen=True)
class Filled:
    """A store holding runs `audits` (the same checkpoint, plans web-1 and web-2) and `hostile`."""

    url: str
    name: str  # the hostile model's and scenario's name
    audits: tuple[int, int]
    hostile: int
    model_id: int
    hostile_model_id: int


def _postgres_url() -> str:
    assert POSTGRES is not None
    engine = create_engine(POSTGRES)
    with engine.begin() as c:
        c.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        c.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    engine.dispose()
    sep = "&" if "?" in POSTGRES else "?"
    return f"{POSTGRES}{sep}options=-csearch_path%3D{SCHEMA}"


def _hostile_run(store: Store, like: int) -> tuple[int, int]:
    """A run of a model named `HOSTILE` whose one scenario, also named `HOSTILE`, is a copy of run `like`'s
    PGD scenario (a real result, so that the evasion kind presents it)."""
    model = store.model("e" * 64, HOSTILE, {"architecture": HOSTILE, "dataset": "digits"})
    spec = RunSpec(
        identity="hostile",
        plan_name=HOSTILE,
        plan_sha256="ab" * 32,
        plan_text="scenarios: []",
        data="digits",
        split_seed=0,
        seed=1,
        sample_indices=[0, 1, 2],
        clean_accuracy=0.9,
        versions={"bastion": "0"},
        device="cpu",
        host=HOSTILE,
    )
    run_id, _ = store.open_run(model, spec)
    (pgd,) = [r for r in store.run(like).results if r.key == "pgd"]
    store.add_result(
        run_id,
        key=HOSTILE,
        position=0,
        family="evasion",
        method=pgd.method,
        spec={**pgd.spec, "key": HOSTILE},
        metrics=dict(pgd.metrics),
        record=dict(pgd.record),
        warnings=[f"{HOSTILE} is a warning"],
        seconds=pgd.seconds,
        artifacts=[Artifact(a.name, a.mime, a.data, HOSTILE) for a in pgd.artifacts],
    )
    store.finish_run(run_id)
    return run_id, model


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def filled(request: pytest.FixtureRequest, digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Filled:
    if request.param == "postgresql":
        if not POSTGRES:
            pytest.skip("BASTION_TEST_POSTGRES is not set (.ci/run starts a PostgreSQL server and sets it)")
        url = _postgres_url()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('web') / 'results.db'}"
    folder = tmp_path_factory.mktemp("plans")
    ids = []
    for seed in (1, 2):
        plan = folder / f"web-{seed}.yaml"
        plan.write_text(PLAN.format(seed=seed))
        args = ["audit", "-c", str(digits_checkpoint), "--plan", str(plan), "--db", url, "-q"]
        result = CliRunner().invoke(app, [*args, "-o", str(folder / f"report-{seed}")])
        assert result.exit_code == 0, result.output
    with Store(url) as store:
        ids = store.run_ids()
        hostile, hostile_model = _hostile_run(store, ids[0])
        model_id = store.run(ids[0]).model_id
    return Filled(url, HOSTILE, (ids[0], ids[1]), hostile, model_id, hostile_model)
