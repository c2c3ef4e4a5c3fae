"""Fixtures of the audit tests: a store on each backend, a tiny plan."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from bastion.store import Store
from bastion.store.schema import Base

POSTGRES = os.environ.get("BASTION_TEST_POSTGRES")  # set by .ci/run, which starts a server on loopback


def _fresh_postgres(url: str) -> None:
    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL with an empty schema: a SQLite file, and the CI's PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
        return
    if not POSTGRES:
        pytest.skip("BASTION_TEST_POSTGRES is not set (.ci/run starts a PostgreSQL server and sets it)")
    _fresh_postgres(POSTGRES)
    yield POSTGRES
    _fresh_postgres(POSTGRES)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


TINY_PLAN = """\
name: tiny
description: cheap scenarios of every kind on the 8x8 digits
n: 40
seed: 1
scenarios:
  - attack: fgsm
    eps: [0.1, 0.3]
  - attack: pgd
    eps: 0.2
    params: {steps: 5}
    checks: true
  - attack: square
    eps: 0.3
    n: 20
    max_queries: 50
    params: {n_queries: 50}
  - attack: modified-entropy
    n: 100
  - detector: energy
    n: 100
    sets: [uniform, inverted]
"""


@pytest.fixture
def tiny_plan(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_PLAN)
    return path
