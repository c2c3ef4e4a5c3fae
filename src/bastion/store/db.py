"""`Store`: the results database. A SQLite file by default, any SQLAlchemy URL (PostgreSQL) by choice.

Every write is one transaction: a scenario's result and its artifacts land together or not at all,
so an audit killed mid-scenario leaves nothing half-written and resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event, func, inspect, select
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, defer, raiseload, selectinload, sessionmaker

from bastion.core.errors import StoreError
from bastion.store.schema import ArtifactRow, Base, ModelRow, ResultRow, RunRow

__all__ = ["DEFAULT_URL", "Artifact", "RunSpec", "Store"]

DEFAULT_URL = "sqlite:///bastion.db"


@dataclass(frozen=True)
class Artifact:
    """A file to store with a scenario's result."""

    name: str
    mime: str
    data: bytes
    caption: str = ""


@dataclass(frozen=True)
class RunSpec:
    """The provenance of a new run (see `RunRow`)."""

    identity: str
    plan_name: str
    plan_sha256: str
    plan_text: str
    data: str
    split_seed: int
    seed: int
    sample_indices: list[int]
    clean_accuracy: float
    versions: dict[str, str]
    device: str
    host: str


def _now() -> datetime:
    return datetime.now(UTC)


class Store:
    """The results database at `url` (created with its tables on first use).

    Args:
        url: a SQLAlchemy URL, e.g. `sqlite:///bastion.db` or `postgresql+psycopg://user@localhost/db`.
        read_only: open the database so that the connection itself refuses writes (SQLite: the file
            opened with `mode=ro`; PostgreSQL: every transaction `READ ONLY` through the session's
            `default_transaction_read_only`), create nothing, and require the tables to exist.
            Other backends are refused in this mode, since the promise could not be kept.
    """

    def __init__(self, url: str = DEFAULT_URL, *, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        try:
            parsed = make_url(url)
            backend = parsed.get_backend_name()
            if read_only:
                self.engine: Engine = _read_only_engine(parsed)
            else:
                if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
                    Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
                self.engine = create_engine(parsed)
            if backend == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            if read_only:
                missing = {"models", "runs", "results", "artifacts"} - set(inspect(self.engine).get_table_names())
                if missing:
                    self.engine.dispose()
                    raise StoreError(f"{_safe(url)} holds no bastion results (no table {', '.join(sorted(missing))})")
            else:
                Base.metadata.create_all(self.engine)
        except (ArgumentError, NoSuchModuleError, ValueError) as e:
            raise StoreError(f"--db {url!r} is not a usable database URL ({_reason(e)})") from None
        except (OperationalError, SQLAlchemyError, OSError) as e:
            raise StoreError(f"cannot open the database {_safe(url)}: {_reason(e)}") from None
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -----------------------------------------------------------------------------
    def model(self, sha256: str, name: str, meta: dict[str, Any]) -> int:
        """The id of the model with this checkpoint hash, recorded now if new."""
        with self._write() as s:
            row = s.scalar(select(ModelRow).where(ModelRow.sha256 == sha256))
            if row is None:
                row = ModelRow(sha256=sha256, name=name, meta=meta, created_at=_now())
                s.add(row)
                s.flush()
            return row.id

    def open_run(self, model_id: int, spec: RunSpec) -> tuple[int, bool]:
        """(run id, resumed): the unfinished run with this identity, or a new one."""
        with self._write() as s:
            row = s.scalar(
                select(RunRow)
                .where(RunRow.identity == spec.identity, RunRow.status == "running")
                .order_by(RunRow.id.desc())
            )
            if row is not None:
                return row.id, True
            row = RunRow(
                identity=spec.identity,
                status="running",
                model_id=model_id,
                plan_name=spec.plan_name,
                plan_sha256=spec.plan_sha256,
                plan_text=spec.plan_text,
                data=spec.data,
                split_seed=spec.split_seed,
                seed=spec.seed,
                sample_indices=spec.sample_indices,
                clean_accuracy=spec.clean_accuracy,
                versions=dict(spec.versions),
                device=spec.device,
                host=spec.host,
                started_at=_now(),
            )
            s.add(row)
            s.flush()
            return row.id, False

    def finished_keys(self, run_id: int) -> set[str]:
        """The scenarios of a run already stored."""
        with self._session() as s:
            return set(s.scalars(select(ResultRow.key).where(ResultRow.run_id == run_id)))

    def add_result(
        self,
        run_id: int,
        *,
        key: str,
        position: int,
        family: str,
        method: str,
        spec: dict[str, Any],
        metrics: dict[str, Any],
        record: dict[str, Any],
        warnings: list[str],
        seconds: float,
        artifacts: Sequence[Artifact] = (),
        if_absent: bool = False,
    ) -> bool:
        """Store one finished scenario and its artifacts in a single transaction; return True.

        A run holds one result per scenario key (a unique constraint): a second one raises `StoreError`,
        or, with `if_absent`, is dropped and False returned. That is how a retried task of a distributed
        audit, whose first attempt stored its result before its worker died, never stores it twice.
        """
        try:
            with self._write() as s:
                row = ResultRow(
                    run_id=run_id,
                    key=key,
                    position=position,
                    family=family,
                    method=method,
                    spec=spec,
                    metrics=metrics,
                    record=record,
                    warnings=list(warnings),
                    seconds=seconds,
                    created_at=_now(),
                )
                row.artifacts = [
                    ArtifactRow(name=a.name, mime=a.mime, caption=a.caption, data=a.data) for a in artifacts
                ]
                s.add(row)
        except IntegrityError:
            if if_absent and key in self.finished_keys(run_id):
                return False
            raise StoreError(f"run {run_id} already holds a result for scenario {key!r}") from None
        return True

    def finish_run(self, run_id: int) -> None:
        with self._write() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise StoreError(f"no run {run_id} in {_safe(self.url)}")
            row.status = "finished"
            row.ended_at = _now()

    # --- reading -----------------------------------------------------------------------------
    def run(self, run_id: int) -> RunRow:
        """A run with its model, results and artifacts loaded (usable after the session closes)."""
        with self._session() as s:
            row = s.scalar(
                select(RunRow)
                .where(RunRow.id == run_id)
                .options(
                    selectinload(RunRow.model),
                    selectinload(RunRow.results).selectinload(ResultRow.artifacts),
                )
            )
        if row is None:
            known = self.run_ids()
            hint = f"; runs stored: {_recent(known)}" if known else "; the database holds no run yet"
            raise StoreError(f"no run {run_id} in {_safe(self.url)}{hint}")
        return row

    def runs(
        self,
        *,
        model_id: int | None = None,
        plan: str | None = None,
        family: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[RunRow]:
        """Runs, newest first, with their model and their results' metrics (the per-sample records and the
        artifacts are not loaded: this is for listings). Filters: the model's id, the plan's name, a family
        among the results, and `since <= started_at < until` (UTC)."""
        query = (
            select(RunRow)
            .options(
                defer(RunRow.plan_text),
                selectinload(RunRow.model),
                selectinload(RunRow.results).options(defer(ResultRow.record), raiseload(ResultRow.artifacts)),
            )
            .order_by(RunRow.started_at.desc(), RunRow.id.desc())
        )
        if model_id is not None:
            query = query.where(RunRow.model_id == model_id)
        if plan is not None:
            query = query.where(RunRow.plan_name == plan)
        if family is not None:
            query = query.where(RunRow.id.in_(select(ResultRow.run_id).where(ResultRow.family == family)))
        if since is not None:
            query = query.where(RunRow.started_at >= since)
        if until is not None:
            query = query.where(RunRow.started_at < until)
        with self._session() as s:
            return list(s.scalars(query))

    def models(self) -> list[tuple[ModelRow, int, datetime | None]]:
        """Every model with its number of runs and the start of its latest run, latest first."""
        runs = (
            select(RunRow.model_id, func.count(RunRow.id).label("n"), func.max(RunRow.started_at).label("last"))
            .group_by(RunRow.model_id)
            .subquery()
        )
        query = (
            select(ModelRow, func.coalesce(runs.c.n, 0), runs.c.last)
            .outerjoin(runs, runs.c.model_id == ModelRow.id)
            .order_by(runs.c.last.desc().nulls_last(), ModelRow.id.desc())
        )
        with self._session() as s:
            return [(m, int(n), last) for m, n, last in s.execute(query)]

    def facets(self) -> tuple[list[str], list[str]]:
        """The plan names and the result families the stored runs use, sorted (for filter menus)."""
        with self._session() as s:
            plans = list(s.scalars(select(RunRow.plan_name).distinct().order_by(RunRow.plan_name)))
            families = list(s.scalars(select(ResultRow.family).distinct().order_by(ResultRow.family)))
        return plans, families

    def model_row(self, model_id: int) -> ModelRow:
        """The model with this id."""
        with self._session() as s:
            row = s.get(ModelRow, model_id)
        if row is None:
            raise StoreError(f"no model {model_id} in {_safe(self.url)}")
        return row

    def run_ids(self) -> list[int]:
        with self._session() as s:
            return list(s.scalars(select(RunRow.id).order_by(RunRow.id)))

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A session that commits when its block ends normally; anything else rolls it back."""
        with self._session() as s:
            yield s
            try:
                s.commit()
            except OperationalError as e:
                raise StoreError(f"cannot write to the database {_safe(self.url)}: {_reason(e)}") from None


def _read_only_engine(url: URL) -> Engine:
    """An engine whose connections refuse writes, whatever the code above them does."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise StoreError("a read-only store needs a SQLite file, not an in-memory database")
        path = Path(url.database).expanduser().resolve()
        if not path.is_file():
            raise StoreError(f"no database file {path}: give the --db an audit wrote (`bastion audit --db ...`)")
        # SQLite's URI form opens the file itself read-only (a write fails with "readonly database").
        ro = url.set(database=f"file:{quote(path.as_posix())}?mode=ro", query={**url.query, "uri": "true"})
        return create_engine(ro)
    if backend == "postgresql":
        # libpq's `options` sets the session default, so every transaction, explicit or implicit, is
        # READ ONLY and the server refuses INSERT, UPDATE, DELETE and DDL.
        options = " ".join(filter(None, [str(url.query.get("options", "")), "-c default_transaction_read_only=on"]))
        return create_engine(url.difference_update_query(["options"]), connect_args={"options": options})
    raise StoreError(f"a read-only store is supported on SQLite and PostgreSQL, not {backend!r}")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _reason(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _safe(url: str) -> str:
    """The URL without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _recent(ids: list[int]) -> str:
    return ", ".join(str(i) for i in ids[-10:]) + (" ..." if len(ids) > 10 else "")
