"""`@app.task` limits: accepted as written, refused when they cannot work, when the decorator runs."""

from __future__ import annotations

import pytest

from neutrino import Neutrino
from neutrino.app import TaskDefinitionError
from neutrino.limits import Rate, rate_of


def test_limits_are_kept_on_the_spec() -> None:
    app = Neutrino("limits")

    @app.task(execution_mode="async", concurrency_key="customer_id", max_concurrency=2, rate_limit="100/s",
              rate_limit_per_key=True)
    def charge(customer_id: int, amount: float) -> None: ...

    limits = charge.spec.limits
    assert limits is not None
    assert (limits.concurrency_key, limits.max_concurrency, limits.rate) == ("customer_id", 2, Rate(100, 1.0))
    assert limits.rate_at_claim and not limits.rate_at_submit
    assert limits.key_of({"customer_id": 42, "amount": 1.0}) == "42"
    assert limits.rate_key({"customer_id": "acme"}) == "acme"

    @app.task(execution_mode="async")
    def unlimited() -> None: ...

    assert unlimited.spec.limits is None


@pytest.mark.parametrize(("text", "rate"), [("100/s", Rate(100, 1.0)), ("30/m", Rate(30, 60.0)),
                                            ("30 / min", Rate(30, 60.0)), ("1000/hour", Rate(1000, 3600.0))])
def test_rates_parse(text: str, rate: Rate) -> None:
    assert rate_of(text) == rate
    assert rate.interval_s == rate.period_s / rate.count


@pytest.mark.parametrize(("options", "says"), [
    ({"rate_limit": "fast"}, "is not '<count>/<s|m|h>'"),
    ({"rate_limit": "0/s"}, "is not '<count>/<s|m|h>'"),
    ({"rate_limit": "5/day"}, "is not '<count>/<s|m|h>'"),
    ({"concurrency_key": "nope", "max_concurrency": 1}, "concurrency_key 'nope' is not one of its parameters"),
    ({"max_concurrency": 0}, "max_concurrency must be an integer >= 1"),
    ({"concurrency_key": "customer_id"}, "concurrency_key needs max_concurrency"),
    ({"rate_limit": "1/s", "rate_limit_per_key": True}, "rate_limit_per_key needs a concurrency_key"),
    ({"rate_limit": "1/s", "on_rate_limit": "drop"}, "on_rate_limit must be one of wait, reject"),
    ({"on_rate_limit": "reject"}, "need a rate_limit"),
])
def test_limits_that_cannot_work_are_refused(options: dict, says: str) -> None:
    app = Neutrino("bad-limits")
    with pytest.raises(TaskDefinitionError, match=r".*") as raised:
        app.task(execution_mode="async", **options)(_customer_task)
    assert says in str(raised.value)


def test_a_sync_task_cannot_wait_but_can_reject() -> None:
    app = Neutrino("sync-limits")
    with pytest.raises(TaskDefinitionError, match="cannot wait for a slot"):
        app.task(max_concurrency=1)(_customer_task)
    with pytest.raises(TaskDefinitionError, match="cannot wait for a slot"):
        app.task(rate_limit="1/s")(_customer_task)
    limited = app.task(rate_limit="1/s", on_rate_limit="reject")(_customer_task)
    assert limited.spec.limits is not None and limited.spec.limits.rate_at_submit


def _customer_task(customer_id: str) -> None: ...
