"""The status page: /status.json groups a topic's subscribers, and a real headless Chromium renders it live.

Chromium and ChromeDriver come from Debian's packages (.ci/run installs them); without them the browser test skips.
The browser is synchronous, so it runs in a thread while the API and the worker keep this test's event loop.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.enums import ChannelType
from shared.routing import service_queue
from tests.conftest import API_KEY
from tests.e2e.conftest import delete_queues
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Without the networking flags Chromium keeps dialling Google's hosts, which this closed network refuses.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1600",
)
TOPIC = "publicTrade.SOLUSDT"


def service() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


async def subscribe_two_services(api: httpx.AsyncClient) -> tuple[str, str]:
    services = service(), service()
    for svc in services:
        response = await api.post(
            "/api/v1/subscriptions", json={"requesting_service": svc, "channel_type": "trades", "symbol": "SOLUSDT"}
        )
        assert response.status_code in (200, 201), response.text
    return services


async def status_when(api: httpx.AsyncClient, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    async def fetch() -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.get("/status.json")).json()
        return body if ready(body) else None

    return await wait_until(fetch, timeout=30, interval=0.2, what="status.json")


def topic_live(body: dict[str, Any]) -> bool:
    """Both subscribers active, the linear socket connected, and a heartbeat with counters taken since."""
    topics = [t for t in body["topics"] if t["topic"] == TOPIC]
    socket = body["worker"]["sockets"].get("linear", {})
    return (
        len(topics) == 1
        and topics[0]["status"] == "active"
        and socket.get("connected") is True
        and socket.get("topics", 0) >= 1
        and body["worker"]["counters"].get("received:linear", 0) > 0
    )


async def test_status_json_lists_a_shared_topic_once_with_both_services(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    async with start_worker():
        svc_a, svc_b = await subscribe_two_services(api)
        body = await status_when(api, topic_live)
    response = await api.get("/status.json", headers={"X-API-Key": ""})
    assert response.status_code == 200  # no key needed
    [topic] = [t for t in body["topics"] if t["topic"] == TOPIC]
    assert topic["endpoint"] == "linear"
    assert {s["service"] for s in topic["services"]} == {svc_a, svc_b}
    assert all(s["status"] == "active" for s in topic["services"])
    worker = body["worker"]
    assert worker["status"] == "up"
    assert worker["heartbeat_age_s"] is not None
    assert worker["heartbeat_ms"] > 0
    assert worker["sockets"]["linear"]["connected"] is True
    assert "last_end_reason" not in worker["sockets"]["linear"]  # states only, never texts
    assert set(worker["publisher"]["dropped"]) >= {"market_buffer_full", "connection_lost"}
    assert worker["counters"]["received:linear"] > 0
    [member] = body["members"]  # the one worker of this cluster, with its lease
    assert member["alive"] is True
    assert member["topic_count"] == 1
    assert "/status.json" not in (await api.get("/schema/openapi.json")).text
    await delete_queues(rabbitmq_url, *(service_queue(svc, ChannelType.TRADES) for svc in (svc_a, svc_b)))


def browser_installed() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def browse_status_page(base_url: str, screenshot: Path) -> tuple[str, str, str]:
    """Open the page in headless Chromium: first anonymous, then with the admin key typed into its form.

    Returns the anonymous page's text, the topic row's and the linear socket row's text.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            driver.get(f"{base_url}/")
            topic_row = f'tr[data-topic="{TOPIC}"][data-status="active"]'
            socket_row = 'tr[data-socket="linear"][data-connected="true"]'
            member_row = 'tr[data-worker][data-alive="true"]'
            WebDriverWait(driver, 30, poll_frequency=0.2).until(
                lambda d: (
                    all(d.find_elements(By.CSS_SELECTOR, row) for row in (socket_row, member_row))
                    and "anonymous" in d.find_element(By.ID, "access").text
                )
            )
            anonymous_text = driver.find_element(By.TAG_NAME, "body").text
            driver.find_element(By.ID, "apikey").send_keys(API_KEY)
            driver.find_element(By.CSS_SELECTOR, "#keyform button[type=submit]").click()
            WebDriverWait(driver, 30, poll_frequency=0.2).until(
                lambda d: all(d.find_elements(By.CSS_SELECTOR, row) for row in (topic_row, socket_row, member_row))
            )
            topic_text = driver.find_element(By.CSS_SELECTOR, topic_row).text
            socket_text = driver.find_element(By.CSS_SELECTOR, socket_row).text
            connected_class = driver.find_element(By.CSS_SELECTOR, f"{socket_row} td:nth-child(2)").get_attribute(
                "class"
            )
            assert connected_class == "ok"  # green
            driver.save_screenshot(str(screenshot))
            return anonymous_text, topic_text, socket_text
        finally:
            driver.quit()


async def test_status_page_hides_topics_until_a_key_is_given_then_shows_them_in_a_browser(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str, tmp_path: Path
) -> None:
    if not browser_installed():
        pytest.skip("no Chromium/ChromeDriver: install Debian's chromium and chromium-driver (.ci/run does with apt)")
    screenshot = tmp_path / "status.png"
    async with start_worker():
        svc_a, svc_b = await subscribe_two_services(api)
        anonymous_text, topic_text, socket_text = await asyncio.to_thread(
            browse_status_page, str(api.base_url).rstrip("/"), screenshot
        )
    for secret in (TOPIC, "SOLUSDT", svc_a, svc_b):
        assert secret not in anonymous_text  # without a key: aggregate health only
    assert TOPIC in topic_text
    assert f"{svc_a} (active)" in topic_text
    assert f"{svc_b} (active)" in topic_text
    assert "connected" in socket_text
    assert "disconnected" not in socket_text
    assert screenshot.stat().st_size > 0
    await delete_queues(rabbitmq_url, *(service_queue(svc, ChannelType.TRADES) for svc in (svc_a, svc_b)))
