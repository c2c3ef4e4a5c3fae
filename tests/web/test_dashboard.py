"""The dashboard's pages through Starlette's test client, on SQLite and PostgreSQL: every page answers,
filters filter, unknown ids get a proper 404 page, stored HTML is shown as text, and the store is
read-only at the connection."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient

from bastion.audit import presenters
from bastion.core.errors import StoreError
from bastion.report import render
from bastion.store import Store
from bastion.web import CSP, create_app

if TYPE_CHECKING:
    from conftest import Filled  # tests/web/conftest.py


@pytest.fixture
def client(filled: Filled) -> Iterator[TestClient]:
    with TestClient(create_app(filled.url)) as c:
        yield c


def _run_links(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'href="/runs/(\d+)"', html)]


def test_runs_list_and_filters(client: TestClient, filled: Filled) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    everything = _run_links(page.text)
    assert sorted(everything) == sorted([*filled.audits, filled.hostile])
    assert everything[0] == filled.hostile  # newest first

    by_model = _run_links(client.get("/", params={"model": filled.model_id}).text)
    assert sorted(by_model) == sorted(filled.audits)
    assert _run_links(client.get("/", params={"plan": "web-2"}).text) == [filled.audits[1]]
    membership = _run_links(client.get("/", params={"family": "membership"}).text)
    assert sorted(membership) == sorted(filled.audits)  # the hand-made run has evasion only
    today = datetime.now(UTC).date()
    assert len(_run_links(client.get("/", params={"since": str(today), "until": str(today)}).text)) == 3
    tomorrow = str(today + timedelta(days=1))
    assert _run_links(client.get("/", params={"since": tomorrow}).text) == []
    assert _run_links(client.get("/", params={"model": "", "plan": "", "since": ""}).text) == everything

    bad = client.get("/", params={"since": "last week"})
    assert bad.status_code == 400 and "since takes a date as YYYY-MM-DD" in bad.text


def test_run_page_is_the_report(client: TestClient, filled: Filled) -> None:
    page = client.get(f"/runs/{filled.audits[0]}")
    assert page.status_code == 200
    with Store(filled.url, read_only=True) as store:
        report = render(store.run(filled.audits[0]), presenters())
    body = report[report.index("<header>") : report.index("</main>")]
    assert body in page.text  # the same scorecard, sections, plots and gallery, byte for byte
    assert page.text.count('<figure class="plot"') >= 2 and page.text.count("<img ") > 0
    assert f'name="a" value="{filled.audits[0]}"' in page.text  # compare with another run
    assert f'href="/models/{filled.model_id}"' in page.text


def test_compare_page(client: TestClient, filled: Filled) -> None:
    a, b = filled.audits
    page = client.get("/compare", params={"a": a, "b": b})
    assert page.status_code == 200
    rows = re.findall(r"<tr>\s*<td class=\"l\">(?:<b>([^<]*)</b>)?</td><td class=\"l\">([^<]*)</td>", page.text)
    scenarios = {s for s, _ in rows if s}
    assert {"whole run", "fgsm@0.1", "fgsm@0.3", "pgd", "modified-entropy"} <= scenarios, scenarios
    assert "robust_accuracy" in {m for _, m in rows}
    assert '<td class="same">0.0%</td>' in page.text  # clean accuracy: one checkpoint, one split
    assert client.get("/compare", params={"a": a}).status_code == 400
    missing = client.get("/compare", params={"a": a, "b": 999})
    assert missing.status_code == 404 and "no run 999" in missing.text


def test_model_history(client: TestClient, filled: Filled) -> None:
    models = client.get("/models")
    assert models.status_code == 200 and f'href="/models/{filled.model_id}"' in models.text
    page = client.get(f"/models/{filled.model_id}")
    assert page.status_code == 200
    assert sorted(_run_links(page.text)) == sorted(filled.audits)
    assert 'id="history-plot"' in page.text and "<svg" in page.text
    for key in ("fgsm@0.1", "fgsm@0.3", "pgd"):
        assert f"<th>{key}</th>" in page.text


@pytest.mark.parametrize("path", ["/runs/999", "/models/999", "/nowhere", "/runs/abc"])
def test_unknown_ids_are_404_pages(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html") and "<h1>" in page.text
    assert 'href="/"' in page.text  # a way back


def test_stored_html_is_shown_as_text(client: TestClient, filled: Filled) -> None:
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for path in ("/", "/models", f"/runs/{filled.hostile}", f"/models/{filled.hostile_model_id}"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert filled.name not in page.text and escaped in page.text, path
    page = client.get("/compare", params={"a": filled.hostile, "b": filled.audits[0]})
    assert filled.name not in page.text and escaped in page.text
    assert "<script" not in client.get(f"/runs/{filled.hostile}").text  # the dashboard sends no script at all


def test_store_refuses_writes_through_the_dashboard(client: TestClient, filled: Filled) -> None:
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    assert store.read_only
    with pytest.raises(DBAPIError), store.engine.connect() as conn:
        conn.execute(text("DELETE FROM artifacts"))
        conn.commit()
    with pytest.raises((StoreError, DBAPIError)):
        store.model("f" * 64, "new", {})
    with Store(filled.url) as rw:
        assert len(rw.run_ids()) == 3 and rw.run(filled.audits[0]).results[0].artifacts  # nothing changed


def test_read_only_open_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no database file"):
        create_app(f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()
    (tmp_path / "empty.db").touch()
    with pytest.raises(StoreError, match="holds no bastion results"):
        create_app(f"sqlite:///{tmp_path / 'empty.db'}")
