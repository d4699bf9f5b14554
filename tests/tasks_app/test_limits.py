"""The database side of rate limits (tasks_app.services.limits): the budget row, and a reject-mode batch
that takes all its starts or none."""

from __future__ import annotations

import pytest

from neutrino import Neutrino
from neutrino.limits import Rate
from tasks_app.core.errors import Overloaded
from tasks_app.models import RateBucket
from tasks_app.services.limits import rate_check_submit, rate_take

pytestmark = pytest.mark.django_db

app = Neutrino("limit-services")


@app.task(execution_mode="async", concurrency_key="customer", rate_limit="4/m", rate_limit_per_key=True,
          on_rate_limit="reject")
def per_customer(customer: str) -> None: ...


def test_a_rate_allows_a_burst_of_its_count_then_one_start_per_interval() -> None:
    rate = Rate(count=4, period_s=60.0)  # one start every 15 s, bursts of 4
    taken = [rate_take(function="f", key="", rate=rate, now_s=1000.0) for _ in range(5)]
    assert taken[:4] == [0.0] * 4
    assert taken[4] == pytest.approx(15.0)  # the fifth fits once one interval has passed
    assert rate_take(function="f", key="", rate=rate, now_s=1014.0) == pytest.approx(1.0)
    assert rate_take(function="f", key="", rate=rate, now_s=1015.0) == 0.0
    assert rate_take(function="f", key="other", rate=rate, now_s=1015.0) == 0.0  # each key has its own
    assert RateBucket.objects.count() == 2


def test_a_reject_mode_batch_takes_every_start_or_none() -> None:
    spec = per_customer.spec
    rate_check_submit(spec=spec, args_list=[{"customer": "a"}] * 3)
    with pytest.raises(Overloaded) as refused:
        rate_check_submit(spec=spec, args_list=[{"customer": "b"}, {"customer": "a"}, {"customer": "a"}])
    assert refused.value.details["concurrency_key"] == "a"
    assert refused.value.details["retry_after_s"] >= 1
    # "b"'s start, taken before "a" was found full, was given back: b still has its 4.
    rate_check_submit(spec=spec, args_list=[{"customer": "b"}] * 4)
    rate_check_submit(spec=spec, args_list=[{"customer": "a"}])  # a's fourth
    with pytest.raises(Overloaded):
        rate_check_submit(spec=spec, args_list=[{"customer": "a"}])
