"""The report in a real browser: headless Chromium loads it with no console error, every image and
plot present, and a screenshot of its first screen is taken."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageStat
from typer.testing import CliRunner

from bastion.cli.app import app

CHROMIUM = os.environ.get("BASTION_TEST_CHROMIUM") or shutil.which("chromium")  # .ci/run installs Debian's
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_report_renders_in_chromium(digits_checkpoint: Path, tiny_plan: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["audit", "-c", str(digits_checkpoint), "--plan", str(tiny_plan), "--db", f"sqlite:///{tmp_path / 'r.db'}"]
    result = CliRunner().invoke(app, [*args, "-o", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    page = (out / "report.html").resolve().as_uri()
    html = (out / "report.html").read_text()
    images, plots = html.count("<img "), html.count('<figure class="plot"')
    assert images > 0 and plots >= 2

    dom = _chromium(
        tmp_path / "p1", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", page
    )
    body = re.search(r"<body ([^>]*)>", dom.stdout)
    assert body is not None, dom.stderr[-2000:]
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert attrs == {"images": f"{images}/{images}", "plots": str(plots), "errors": "0"}  # all loaded, no error
    assert not [line for line in dom.stderr.splitlines() if "CONSOLE" in line], dom.stderr

    shot = tmp_path / "report.png"
    _chromium(tmp_path / "p2", "--window-size=1280,900", "--hide-scrollbars", f"--screenshot={shot}", page)
    with Image.open(shot) as im:
        assert im.size == (1280, 900)
        assert max(ImageStat.Stat(im.convert("L")).stddev) > 20  # something is drawn, not a blank page
    keep = os.environ.get("BASTION_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")
