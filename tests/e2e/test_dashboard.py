"""The dashboard in a real headless Chromium, against a real `slipstream serve` in front of `slipstream sim`.

The browser is Debian's ``chromium`` driven by Playwright's Python client (``executable_path``: Playwright's own
browser download is never used). After a known sequence of requests the page's figures, read from their
``data-metric`` elements, must match /api/metrics/summary; exports and the clear-cache action go through the
page's own buttons. A screenshot of each run is saved to the test's tmp_path and its path printed.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import GatewayFactory, Process

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (scripts/install installs it)", allow_module_level=True)

from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright  # noqa: E402

ADMIN = "dashboard-admin-key"
ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN}"}
FLAKY_GROUP = """
  flaky:
    retries: {max_attempts: 1}
    breaker: {failures: 1000}
    deployments:
      - {provider: openai, model: sim-1, name: flaky-sim, base_url: "%s/v1"}
"""
WAIT_MS = 20_000


@pytest.fixture
def gateway(gateways: GatewayFactory) -> Process:
    config = gateways.config_text(server=f"  admin_key: {ADMIN}", extra_groups=FLAKY_GROUP % gateways.sim.url)
    return gateways.start(config)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking"]
        )
        yield chromium
        chromium.close()


class PageLog:
    """What the page said in its console, the errors it threw, and every URL it requested."""

    def __init__(self, page: Page) -> None:
        self.console: list[ConsoleMessage] = []
        self.page_errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda message: self.console.append(message))
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("request", lambda request: self.requests.append(request.url))

    def errors(self) -> list[str]:
        return [m.text for m in self.console if m.type == "error"] + self.page_errors


def chat(gateway: Process, content: str, **extra: Any) -> httpx.Response:
    body = {"model": "sim", "messages": [{"role": "user", "content": content}], "max_tokens": 30, **extra}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=20)


def send_known_sequence(gateway: Process) -> None:
    """6 misses (2 of them streamed, for TTFT), 4 hits, 2 errors (the sim answers 500)."""
    for i in range(4):
        assert chat(gateway, f"question {i}").headers["x-slipstream-cache"] == "miss"
    for i in range(4, 6):
        body = {
            "model": "sim",
            "messages": [{"role": "user", "content": f"question {i}"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=20) as response:
            assert response.headers["x-slipstream-cache"] == "miss"
            response.read()
    for i in range(4):
        assert chat(gateway, f"question {i}").headers["x-slipstream-cache"] == "hit"
    for i in range(2):
        failed = chat(gateway, f"fails {i}", model="flaky", sim={"fault": "500"})
        assert failed.status_code == 502


def api(gateway: Process, name: str, **params: str) -> Any:
    response = httpx.get(
        f"{gateway.url}/api/metrics/{name}", params=params, headers=ADMIN_HEADERS, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def shown(page: Page, metric: str) -> tuple[str, str]:
    """(text, data-value) of the first element showing ``metric``."""
    element = page.locator(f'[data-metric="{metric}"]').first
    return element.inner_text(), element.get_attribute("data-value") or ""


_UNITS = {"ms": 1.0, "s": 1000.0, "%": 0.01, "$": 1.0, "": 1.0}


def displayed_number(text: str) -> tuple[float, float]:
    """A figure as shown ("4.16 ms", "1.20 s", "28.6%", "$0.0040", "1,426") -> (value, half its last digit)."""
    match = re.fullmatch(r"(\$?)([\d,]+(?:\.(\d+))?)\s*(ms|s|%)?", text.strip())
    assert match, f"not a figure: {text!r}"
    dollar, number, decimals, unit = match.groups()
    scale = _UNITS[unit or dollar or ""]
    value = float(number.replace(",", "")) * scale
    return value, 0.5 * 10.0 ** -len(decimals or "") * scale


def assert_shows(page: Page, metric: str, expected: float | None) -> None:
    text, raw = shown(page, metric)
    if expected is None:
        assert text == "—" and raw == "", (metric, text)
        return
    assert float(raw) == pytest.approx(expected, rel=1e-9, abs=1e-12), (metric, raw, expected)
    value, tolerance = displayed_number(text)
    assert abs(value - expected) <= tolerance + 1e-9, (metric, text, expected)


def open_dashboard(browser: Browser, gateway: Process, *, key: str | None) -> tuple[Page, PageLog]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    if key is not None:
        context.add_init_script(f"sessionStorage.setItem('slipstream.adminKey', {json.dumps(key)})")
    page = context.new_page()
    log = PageLog(page)
    page.goto(f"{gateway.url}/dashboard")
    return page, log


def test_the_dashboard_shows_what_the_metrics_api_says(
    browser: Browser, gateway: Process, tmp_path: Path
) -> None:
    send_known_sequence(gateway)
    summary = api(gateway, "summary")
    assert summary["count"] == 12 and summary["errors"] == 2 and summary["cache_hits"] == 4

    page, log = open_dashboard(browser, gateway, key=ADMIN)
    page.wait_for_selector("body[data-state=ready]", timeout=WAIT_MS)
    expect(page.locator("[data-metric=count]")).to_have_text("12", timeout=WAIT_MS)

    figures = {
        "count": summary["count"],
        "errors": summary["errors"],
        "error_rate": summary["error_rate"],
        "hit_rate": summary["hit_rate"],
        "cache_hits": summary["cache_hits"],
        "cache_lookups": summary["cache_lookups"],
        "tokens_prompt": summary["tokens"]["prompt"],
        "tokens_completion": summary["tokens"]["completion"],
        "cost_usd": summary["cost_usd"],
        "saved_usd": summary["saved_usd"],
        "requests_per_second": summary["requests_per_second"],
        **{f"latency_{p}": summary["latency_ms"][p] for p in ("p50", "p95", "p99")},
        **{f"ttft_{p}": summary["ttft_ms"][p] for p in ("p50", "p95", "p99")},
    }
    for metric, expected in figures.items():
        assert_shows(page, metric, expected)
    assert summary["ttft_ms"]["p50"] is not None  # the streamed requests
    assert page.locator('[data-error-class="UpstreamStatusError"] b').inner_text() == "2"

    health = api(gateway, "health")
    assert page.locator("[data-metric=status]").inner_text() == health["status"]
    deployments = [d for g in health["groups"] for d in g["deployments"]]
    assert {d["deployment"] for d in deployments} >= {"openai/sim-1", "flaky-sim"}
    for deployment in deployments:
        row = page.locator(f'tr[data-deployment="{deployment["deployment"]}"]')
        state = deployment["breaker"]["state"].replace("_", " ")
        assert row.locator("[data-field=breaker]").inner_text() == state
    assert page.locator("#chart-rate svg rect.bar").count() >= 1
    assert page.locator("#chart-latency svg path.line").count() >= 1

    screenshot = tmp_path / "dashboard.png"
    page.screenshot(path=screenshot, full_page=True)
    print(f"dashboard screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000

    # Export: the page's buttons download what the export endpoint serves.
    with page.expect_download() as download:
        page.click("#export-json")
    exported = json.loads(Path(download.value.path()).read_text())
    assert download.value.suggested_filename.endswith(".json")
    assert exported["summary"]["count"] == 12 and exported["health"]["groups"]
    with page.expect_download() as download:
        page.click("#export-csv")
    assert download.value.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    (total,) = [r for r in rows if r["dimension"] == "total"]
    assert total["requests"] == "12" and total["errors"] == "2"

    # Clear the cache: two clicks (the first arms the button), then the store is empty and the page says so.
    assert api(gateway, "cache")["store"]["entries"] == 6
    page.click("#clear-cache")
    assert page.locator("#clear-cache").inner_text() == "Click again to clear"
    page.click("#clear-cache")
    expect(page.locator("#toast")).to_contain_text("Cleared 6 cache entries", timeout=WAIT_MS)
    assert api(gateway, "cache")["store"]["entries"] == 0
    expect(page.locator("[data-metric=cache_entries]")).to_have_text("0", timeout=WAIT_MS)
    assert chat(gateway, "question 0").headers["x-slipstream-cache"] == "miss"

    assert log.errors() == []
    assert all(url.startswith(gateway.url) or url.startswith("blob:") for url in log.requests), log.requests


def test_the_dashboard_asks_for_the_admin_key_and_rejects_a_wrong_one(
    browser: Browser, gateway: Process
) -> None:
    assert chat(gateway, "hello").status_code == 200
    page, log = open_dashboard(browser, gateway, key=None)

    page.wait_for_selector("#key-dialog[open]", timeout=WAIT_MS)
    assert page.locator("body").get_attribute("data-state") == "locked"
    assert page.locator("[data-metric=count]").inner_text() == "—"  # nothing shown without the key

    page.fill("#key-input", "not-the-key")
    page.click("#key-submit")
    expect(page.locator("#key-error")).to_contain_text("not accepted", timeout=WAIT_MS)
    assert page.locator("#key-dialog").get_attribute("open") is not None

    page.fill("#key-input", ADMIN)
    page.click("#key-submit")
    page.wait_for_selector("body[data-state=ready]", timeout=WAIT_MS)
    assert_shows(page, "count", api(gateway, "summary")["count"])
    assert page.evaluate("sessionStorage.getItem('slipstream.adminKey')") == ADMIN

    # The browser itself logs each refused API call ("Failed to load resource ... 401"); nothing else may appear.
    unexpected = [e for e in log.errors() if "status of 401" not in e]
    assert unexpected == []
    assert any("status of 401" in e for e in log.errors())
