"""bastion.store: the results database (SQLAlchemy 2; SQLite by default, PostgreSQL by URL)."""

from bastion.store.db import DEFAULT_URL, Artifact, RunSpec, Store
from bastion.store.schema import ArtifactRow, ModelRow, ResultRow, RunRow

__all__ = ["DEFAULT_URL", "Artifact", "ArtifactRow", "ModelRow", "ResultRow", "RunRow", "RunSpec", "Store"]
