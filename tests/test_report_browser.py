"""The report page in a real browser: headless Chromium (Debian's chromium and chromium-driver) opens
``index.html`` of two real runs; every image must have loaded and the console must hold no error.
Skipped, with the reason, where Chromium, its driver or selenium is absent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from simulations.experiments import report
from simulations.inprocess import run_in_process

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="headless Chromium is absent (apt-get install chromium chromium-driver)"
)


def test_report_page_loads_every_image_without_console_errors(tmp_path: Path) -> None:
    runs = []
    for method in ("fedavg", "fedgela"):
        out = tmp_path / method
        overrides = {"dataset": "digits", "model": "cnn", "num-server-rounds": 2, "local-epochs": 1}
        outcome = run_in_process({**overrides, "method": method, "output-dir": str(out)})
        assert outcome.exit is None, outcome.errors
        runs.append(str(out))
    report.main([*runs, "--out", str(tmp_path / "report")])
    page = tmp_path / "report" / "index.html"

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        driver.get(page.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt || i.title]);"
        )
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        title = driver.title
    finally:
        driver.quit()
    assert title.startswith("fedetf report")
    assert len(images) >= 4  # curves (acc, bacc), heat map, client distribution
    assert all(complete and width > 0 for complete, width, _ in images), images
    assert errors == []
