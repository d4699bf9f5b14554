"""[objects] A sync task's large result, stored in the object store by the HTTP process that ran it.

Queued tasks' results are stored by their worker (`workers.pool_worker.settle`); this is the same for the
sync pool of `neutrino serve`, through the process's NATS connection (`Ports.broker`).
"""

from __future__ import annotations

import json
from typing import Any

from tasks_app.core.errors import BrokerUnavailable
from tasks_app.core.ports import Broker
from tasks_app.selectors.results import value_shown
from workers.engine.objects import store_spooled
from workers.engine.spool import discard, spooled

STORE_MIN_TIMEOUT_S = 30.0
STORE_BYTES_PER_S = 20_000_000  # the timeout grows with the size: a 1 GB result gets 50 s more


def result_object_store(*, broker: Broker | None, task_id: str, value: Any) -> tuple[Any, str]:
    """Store the result the child left in a spool file: (the reference a row keeps, the JSON the caller gets).

    Raises BrokerUnavailable when NATS cannot take it (the spool file is deleted either way).
    """
    marker = spooled(value)
    assert marker is not None
    if broker is None:
        discard(marker)
        raise BrokerUnavailable(f"the result of task {task_id} is too large for a reply and this server has no "
                                "NATS connection (NEUTRINO_NATS_URL) to store it", task_id=task_id)
    timeout_s = STORE_MIN_TIMEOUT_S + int(marker.get("size") or 0) / STORE_BYTES_PER_S
    try:
        ref = broker.call(lambda js, nc: store_spooled(js, marker, name=task_id), timeout_s=timeout_s)
    except Exception as exc:
        discard(marker)
        raise BrokerUnavailable(f"the result of task {task_id} could not be stored in NATS: {exc}",
                                task_id=task_id) from None
    return ref, json.dumps(value_shown(ref, task_id), ensure_ascii=False, separators=(",", ":"))
