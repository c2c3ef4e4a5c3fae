"""The tables of the results database (SQLAlchemy 2 declarative mapping).

One row per model (by checkpoint hash), per audit run (with its full provenance), per finished
scenario (its metrics, per-sample records and sanity-check warnings) and per artifact (images).
JSON columns hold plain JSON types only; the same schema runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["ArtifactRow", "Base", "ModelRow", "ResultRow", "RunRow"]


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class ModelRow(Base):
    """A model under audit, identified by the SHA-256 of its checkpoint file (or weights)."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunRow(Base):
    """One audit run: a plan applied to a model on fixed samples, with everything needed to redo it.

    `identity` hashes what makes two invocations the same audit (model, data, split, plan, seed), so
    that a killed audit started again with the same arguments resumes this row.
    """

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))  # running | finished
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    plan_name: Mapped[str] = mapped_column(String(200))
    plan_sha256: Mapped[str] = mapped_column(String(64))
    plan_text: Mapped[str] = mapped_column(Text)
    data: Mapped[str] = mapped_column(String(500))
    split_seed: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    sample_indices: Mapped[list[Any]] = mapped_column(JSON)
    clean_accuracy: Mapped[float] = mapped_column()
    versions: Mapped[dict[str, Any]] = mapped_column(JSON)  # bastion, torch, python
    device: Mapped[str] = mapped_column(String(100))
    host: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    model: Mapped[ModelRow] = relationship()
    results: Mapped[list[ResultRow]] = relationship(back_populates="run", order_by="ResultRow.position")


class ResultRow(Base):
    """A finished scenario of a run. Written with its artifacts in one transaction, or not at all."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("run_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    key: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)  # the scenario's place in the plan
    family: Mapped[str] = mapped_column(String(50))
    method: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the scenario as the plan gave it, defaults filled in
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)  # headline numbers (robust_accuracy, ...)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)  # the full result: per-sample records, extra
    warnings: Mapped[list[Any]] = mapped_column(JSON)
    seconds: Mapped[float] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    run: Mapped[RunRow] = relationship(back_populates="results")
    artifacts: Mapped[list[ArtifactRow]] = relationship(back_populates="result", order_by="ArtifactRow.id")


class ArtifactRow(Base):
    """A file a scenario produced (a PNG of clean | adversarial | perturbation, ...)."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    mime: Mapped[str] = mapped_column(String(100))
    caption: Mapped[str] = mapped_column(String(500))
    data: Mapped[bytes] = mapped_column(LargeBinary)

    result: Mapped[ResultRow] = relationship(back_populates="artifacts")
