"""`neutrino serve --mode http` as a user runs it: gunicorn for the pages, the websocket process beside it.

No browser here (see test_browser.py): a signed-in HTTP client and a websocket client, so this runs
wherever nats-server does.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.dashboard.conftest import DashboardServer

RECEIVE_S = 10.0


def signed_in(server: DashboardServer) -> httpx.Client:
    """An HTTP client signed in through the login form (CSRF cookie and token, then the session cookie)."""
    client = httpx.Client(base_url=server.base_url, timeout=30)
    page = client.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = client.post("/login/", data={"username": server.username, "password": server.password,
                                            "csrfmiddlewaretoken": token, "next": "/"})
    assert response.status_code == 302 and response.headers["location"] == "/", response.text[:500]
    return client


def socket_headers(server: DashboardServer, client: httpx.Client | None) -> dict[str, str]:
    headers = {"Origin": server.base_url}
    if client is not None:
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    return headers


async def receive_until(socket: Any, predicate: Any) -> str:
    async with asyncio.timeout(RECEIVE_S):
        while True:
            payload = await socket.recv()
            if predicate(payload):
                return str(payload)


def test_pages_are_styled_and_need_a_login_under_the_real_server(dashboard_server) -> None:
    anonymous = httpx.get(f"{dashboard_server.base_url}/", follow_redirects=False, timeout=30)
    assert anonymous.status_code == 302 and anonymous.headers["location"].startswith("/login/")
    css = httpx.get(f"{dashboard_server.base_url}/static/neutrino.css", timeout=30)
    assert css.status_code == 200 and "--accent" in css.text  # WhiteNoise, without DEBUG
    client = signed_in(dashboard_server)
    page = client.get("/").text
    assert f'ws-connect="ws://127.0.0.1:{dashboard_server.ws_port}/ws/dashboard/?view=list"' in page
    vendor = re.search(r'src="(/static/vendor/htmx-[0-9.]+\.min\.js)"', page).group(1)
    assert client.get(vendor).status_code == 200


def test_a_sync_call_reaches_an_open_socket_without_a_reload(dashboard_server) -> None:
    client = signed_in(dashboard_server)
    url = f"ws://127.0.0.1:{dashboard_server.ws_port}/ws/dashboard/?view=list"

    async def scenario() -> None:
        async with websockets.connect(url, additional_headers=socket_headers(dashboard_server, client)) as socket:
            first = await receive_until(socket, lambda p: 'id="task-table"' in p)
            assert 'hx-swap-oob="true"' in first
            response = await asyncio.to_thread(client.post, "/api/echo", json={"args": {"value": "live!"}})
            assert response.status_code == 200, response.text
            task_id = response.json()["task_id"]
            payload = await receive_until(socket, lambda p: f'id="task-{task_id}" class="status-completed' in p)
            assert "echo" in payload

    asyncio.run(scenario())


@pytest.mark.parametrize("who", ["anonymous", "other-site"])
def test_the_websocket_refuses_strangers(dashboard_server, who) -> None:
    client = signed_in(dashboard_server) if who == "other-site" else None
    headers = socket_headers(dashboard_server, client)
    if who == "other-site":
        headers["Origin"] = "http://evil.example"
    url = f"ws://127.0.0.1:{dashboard_server.ws_port}/ws/dashboard/?view=list"

    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 403

    asyncio.run(scenario())
