"""The status page at GET / in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) against a running cluster of real processes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.integration.cluster import Cluster
from tests.integration.servers import require

pytestmark = pytest.mark.integration

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
# No network beyond the router: without these Chromium reaches out at start.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


@pytest.fixture
def browser():
    paths = require("chromium", "chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.TemporaryDirectory(prefix="ringcache-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = paths["chromium"]
    for flag in (*FLAGS, f"--user-data-dir={profile.name}", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(paths["chromedriver"]), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, nodes=3).start()
    yield c
    c.stop()


def node_state(driver, name: str) -> str | None:
    # Read in one script: the page redraws every poll, and found elements go stale.
    return driver.execute_script(
        "const cell = document.querySelector("
        "`#section-nodes tr[data-node=\"${arguments[0]}\"] [data-state]`);"
        "return cell ? cell.textContent : null", name)


def hot_keys(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#section-hot tr[data-hot-key]')]"
        ".map((row) => row.dataset.hotKey)")


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_the_page_names_every_node_and_shows_a_stopped_one_down_while_open(browser, cluster):
    mc = cluster.memcache()
    for i in range(40):
        assert mc.get(f"k{i}") == f"value-of-k{i}".encode()  # loads
        assert mc.get(f"k{i}") == f"value-of-k{i}".encode()  # hits
    browser.get(cluster.http_base + "/")
    assert browser.title == "ringcache"
    assert wait_for(lambda: all(node_state(browser, n) == "up" for n in cluster.node_names),
                    timeout=15)
    page = browser.find_element("tag name", "body").text
    for name in cluster.node_names:
        assert name in page
    groups = browser.find_element("id", "section-groups").text
    assert "scores" in groups and "sessions" in groups
    # 40 of 80 gets were hits: the ratio since start, until the next poll shows a rate.
    assert "50.0%" in browser.find_element("id", "section-overview").text
    # One key read far more than the others leads the hot keys, as /v1/hot ranks them.
    for _ in range(300):
        mc.get("k7")
    assert wait_for(lambda: hot_keys(browser)[:1] == ["k7"], timeout=15)
    assert cluster.http_json("GET", "/v1/hot")["groups"]["scores"]["keys"][0]["key"] == "k7"

    cluster.nodes["node-1"].terminate()
    cluster.nodes["node-1"].wait(10)
    assert wait_for(lambda: node_state(browser, "node-1") == "down", timeout=15)
    assert node_state(browser, "node-0") == "up"
    assert "live" in browser.find_element("id", "live").text
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "status-page.png"))
    browser.set_window_size(420, 900)  # a phone-sized window: still readable, nothing cut
    wait_for(lambda: node_state(browser, "node-1") == "down", timeout=5)
    browser.save_screenshot(str(SCREENSHOTS / "status-page-narrow.png"))
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 420
    assert console_errors(browser) == []
