"""The ports of a pool worker process: what the services it calls reach, over its one NATS connection.

Built at start, before the connection exists: the bridge is attached to the worker's own nats.py
connection once it is up (`NatsBridge.attach`), so the process holds one connection. Until then events
go nowhere and publishes raise `BrokerDown`. A worker runs no sync tasks (`runner` is None); its ledger
writer starts only if something records through it.
"""

from __future__ import annotations

from pools_app.catalog import PoolTable
from tasks_app.adapters.events import PublishedTaskEvents
from tasks_app.adapters.ledger import LedgerWriter
from tasks_app.core.conf import NeutrinoSettings
from tasks_app.core.ports import Ports
from workers.engine.broker.bridge import NatsBridge
from workers.engine.broker.publisher import Publisher


def worker_ports(conf: NeutrinoSettings, *, bridge: NatsBridge, ledger: LedgerWriter) -> Ports:
    publisher = Publisher(bridge, timeout_s=conf.publish_timeout_s)
    # No long-polls wait in a worker: its events need no subscriptions.
    return Ports(broker=bridge, publisher=publisher, events=PublishedTaskEvents(publisher, None), ledger=ledger,
                 runner=None, pools=PoolTable())
