"""A result downloaded into a file (`download_result` of both clients): written as it arrives to
`<path>.part`, its length and sha256 checked against what the server stored, then renamed to `path`;
on any error the partial file is removed."""

from __future__ import annotations

import hashlib
import os
from types import TracebackType
from typing import BinaryIO

import httpx

from neutrino.client.errors import NeutrinoClientError
from neutrino.client.models import DownloadedResult

SHA256_HEADER = "X-Neutrino-SHA256"  # the stored object's checksum, sent with a download
CHUNK_BYTES = 1 << 16


class ResultFile:
    """Use as a context manager around the body of a 200 answer: `write` each chunk, then leave the block."""

    def __init__(self, path: str | os.PathLike[str], response: httpx.Response, call: str) -> None:
        self.path = os.fspath(path)
        self.partial = f"{self.path}.part"
        self.call = call
        self.status = response.status_code
        self.expected_sha256 = response.headers.get(SHA256_HEADER, "")
        self.expected_size = int(response.headers.get("content-length", -1))
        self.content_type = response.headers.get("content-type", "")
        self.digest = hashlib.sha256()
        self.size = 0
        self._out: BinaryIO | None = None

    def __enter__(self) -> ResultFile:
        self._out = open(self.partial, "wb")
        return self

    def write(self, chunk: bytes) -> None:
        assert self._out is not None
        self.digest.update(chunk)
        self.size += len(chunk)
        self._out.write(chunk)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._out is not None
        self._out.close()
        try:
            if kind is None:
                self._check()
                os.replace(self.partial, self.path)
        finally:
            if os.path.exists(self.partial):
                os.unlink(self.partial)

    def _check(self) -> None:
        if self.expected_size >= 0 and self.size != self.expected_size:
            raise NeutrinoClientError(f"{self.call}: got {self.size:,} of {self.expected_size:,} bytes",
                                      call=self.call, status_code=self.status)
        if self.expected_sha256 and self.digest.hexdigest() != self.expected_sha256:
            raise NeutrinoClientError(
                f"{self.call}: sha256 {self.digest.hexdigest()} does not match the stored {self.expected_sha256}",
                call=self.call, status_code=self.status)

    def result(self) -> DownloadedResult:
        return DownloadedResult(path=self.path, size=self.size, sha256=self.digest.hexdigest(),
                                content_type=self.content_type)
