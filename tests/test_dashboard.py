"""The dashboard in a real browser: Debian's chromium, driven by playwright.

It loads /dashboard/, checks the routers, services and workers are shown,
then follows real containers: one stopped shows as draining, then
disappears; a new one appears; each change within 2 s. Screenshots are
saved under test-artifacts/ (or $PORTSIDE_ARTIFACTS) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_until
from docker_support import container_ip
from observability import start_with_admin

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("PORTSIDE_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
)
LABELS = {
    "traefik.enable": "true",
    "traefik.http.routers.shop.rule": "Host(`shop.localhost`)",
    "traefik.http.services.shop.loadbalancer.server.port": "80",
}
DOCKER = "[providers.docker]\nexposedByDefault = false\n"
#: The dashboard must show a change within this long.
LIVE = 2.0


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("no chromium: `apt-get install chromium` (make install does it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


def _within(seconds: float, expectation, since: float) -> float:
    """Wait for a playwright expectation; return how long after `since` it held."""
    expectation(timeout=seconds * 1000 + 5000)
    took = time.monotonic() - since
    assert took < seconds, f"took {took:.2f}s"
    return took


def test_dashboard_shows_containers_come_and_go(portside, containers, browser):
    expect = sync_api.expect
    first = containers.run(labels=LABELS)
    second = containers.run(labels=LABELS)
    admin = start_with_admin(portside, "", workers=2, extra=DOCKER)
    urls = {c: f"http://{container_ip(c)}:80" for c in (first, second)}
    wait_until(lambda: len(admin.server_states("shop@docker") or {}) == 2)
    for _ in range(30):
        assert admin.proxy.get("shop.localhost").status == 200

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"http://127.0.0.1:{admin.port}/dashboard/")
    service = page.locator('[data-service="shop@docker"]')

    def state(container):
        return service.locator(f'[data-server="{urls[container]}"] [data-state]')

    expect(page.locator('[data-router="shop@docker"]')).to_contain_text("Host(`shop.localhost`)")
    expect(state(first)).to_have_text("up")
    expect(state(second)).to_have_text("up")
    expect(page.locator("#workers [data-worker]")).to_have_count(2)
    expect(service.locator("td").last).to_have_text("30", timeout=5000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-1-two-servers.png", full_page=True)

    # busybox httpd ignores SIGTERM, so the container drains for its 3 s grace.
    stopper = threading.Thread(target=second.stop, kwargs={"timeout": 3})
    stopped_at = time.monotonic()
    stopper.start()
    draining = _within(
        LIVE, lambda **kw: expect(state(second)).to_have_text("draining", **kw), stopped_at
    )
    page.screenshot(path=ARTIFACTS / "dashboard-2-draining.png", full_page=True)
    stopper.join(15)
    gone_at = time.monotonic()
    gone = _within(LIVE, lambda **kw: expect(state(second)).to_have_count(0, **kw), gone_at)

    third = containers.run(labels=LABELS)
    urls[third] = f"http://{container_ip(third)}:80"
    started_at = time.monotonic()
    appeared = _within(LIVE, lambda **kw: expect(state(third)).to_have_text("up", **kw), started_at)
    expect(state(first)).to_have_text("up")
    page.screenshot(path=ARTIFACTS / "dashboard-3-replaced.png", full_page=True)
    print(f"draining shown {draining:.2f}s, gone {gone:.2f}s, new server {appeared:.2f}s")
