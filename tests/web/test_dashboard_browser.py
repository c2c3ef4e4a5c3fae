"""The dashboard in headless Chromium (Playwright) against a real uvicorn server, on SQLite and
PostgreSQL: runs -> run -> compare -> model history by clicking, with no console message of level
error, no failed request and no HTTP error, and a screenshot of each page."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image, ImageStat

pytest.importorskip("starlette")
from bastion.web import create_app

uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

if TYPE_CHECKING:
    from conftest import Filled  # tests/web/conftest.py

CHROMIUM = os.environ.get("BASTION_TEST_CHROMIUM") or shutil.which("chromium")  # .ci/run installs Debian's


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(filled: Filled) -> Iterator[str]:
    """The dashboard served by uvicorn in a thread on a free loopback port; yields its base URL."""
    port = _free_port()
    config = uvicorn.Config(create_app(filled.url), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=20)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_dashboard_in_chromium(server: str, filled: Filled, tmp_path: Path) -> None:
    problems: list[str] = []
    shots: list[Path] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

        def shot(name: str) -> None:
            path = tmp_path / f"{name}.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(path)

        page.goto(server + "/")
        assert page.locator("table#runs tbody tr").count() == 3
        box = page.locator("input[name=b]").first.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1280  # the compare choice is on screen
        shot("runs")

        page.select_option("select[name=model]", str(filled.model_id))
        page.click("button#filter")
        page.wait_for_load_state()
        assert page.locator("table#runs tbody tr").count() == 2
        shot("runs-filtered")

        page.click(f"a[href='/runs/{filled.audits[0]}']")
        page.wait_for_load_state()
        assert page.title().startswith(f"Run {filled.audits[0]} ")
        assert page.locator("figure.plot svg").count() >= 2
        images = page.locator("details[open] .gallery img")
        assert images.count() > 0
        assert all(images.nth(i).evaluate("i => i.complete && i.naturalWidth > 0") for i in range(images.count()))
        shot("run")

        page.select_option("select[name=b]", str(filled.audits[1]))
        page.click("button#compare")
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == f"Run {filled.audits[0]} vs run {filled.audits[1]}"
        assert page.locator("table#deltas-table tbody tr").count() >= 5
        shot("compare")

        page.click("nav.top a[href='/models']")
        page.wait_for_load_state()
        page.click(f"a[href='/models/{filled.model_id}']")
        page.wait_for_load_state()
        assert page.locator("#history-plot svg").count() == 1
        assert page.locator("table#history tbody tr").count() == 2
        shot("model")

        page.goto(server + f"/runs/{filled.hostile}")
        assert page.locator("h1").inner_text() == f"Audit of {filled.name}"  # shown as text, never run
        shot("hostile")
        browser.close()

    assert problems == []
    keep = os.environ.get("BASTION_SCREENSHOT_DIR")
    for path in shots:
        with Image.open(path) as im:
            assert im.size[0] == 1280 and max(ImageStat.Stat(im.convert("L")).stddev) > 20  # not a blank page
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / f"dashboard-{path.name}")
