"""`neutrino.File`: a task's return value that is a file, stored as an object rather than in the task's row.

A queued task (a NATS pool) may return `File(path)` or `bytes`; the worker streams the file into the
JetStream object store and the task's row holds a reference (size, sha256, content type). Callers
download it from `GET /tasks/<id>/result` (`NeutrinoClient.download_result`); the dashboard offers it
for download and shows images inline. A sync task cannot return one yet (its result travels in the
HTTP response): it fails with ResultError as any non-JSON result does.

The file is read after the function returned, so it must still exist then; the worker never deletes it
(it is the task's file). Write it under a temporary directory the task owns if it is scratch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class File:
    """A file a task returns: `path` on the worker's disk, its `content_type`, and the name a download gets."""

    path: str | os.PathLike[str]
    content_type: str = "application/octet-stream"
    filename: str = field(default="")

    def __post_init__(self) -> None:
        if not isinstance(self.content_type, str) or "/" not in self.content_type:
            raise ValueError(f"content_type must be a MIME type such as 'image/png', got {self.content_type!r}")
        if not self.filename:
            object.__setattr__(self, "filename", os.path.basename(os.fspath(self.path)))
