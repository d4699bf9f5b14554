"""The client's `submit(..., callback_url=...)` against the live Neutrino of tests/neutrino/conftest.py."""

from __future__ import annotations

import asyncio

import pytest

from neutrino.client import AsyncNeutrinoClient, ValidationError


def test_submit_sends_the_callback_url_and_a_refused_one_names_the_field(neutrino_client) -> None:
    # The live server keeps the default allow-list: public hosts only, so a loopback URL is refused.
    with pytest.raises(ValidationError) as caught:
        neutrino_client.submit("cl_async_add", {"a": 1, "b": 2}, callback_url="http://127.0.0.1:9/hook")
    error = caught.value
    assert error.status_code == 422 and [f["field"] for f in error.fields] == ["callback_url"]
    assert "a loopback address" in str(error)


def test_the_async_client_sends_it_too(live_stack) -> None:
    async def main() -> None:
        async with AsyncNeutrinoClient(live_stack.url, token=live_stack.token) as client:
            with pytest.raises(ValidationError) as caught:
                await client.submit("cl_async_add", {"a": 1, "b": 2}, callback_url="http://10.0.0.1/hook")
            assert [f["field"] for f in caught.value.fields] == ["callback_url"]

    asyncio.run(main())
