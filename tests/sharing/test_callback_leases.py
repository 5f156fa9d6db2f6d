"""Callback leases: a job claims each callback right before posting it, so however slowly the department's endpoint
answers, no other node's job takes a callback over while it is still to be posted (issue 13, item 6)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.adapters.callbacks import CallbackSender, DeliveryResult, SignedCallback
from backend.app import create_app
from backend.extensions import db
from backend.sharing.request_callbacks import LEASE
from tests.conftest import SAMR, FakeClock, _settings
from tests.sharing.access_request_support import API, Asker, Receiver, allow_callbacks, start_receiver, stored_request

POST_SECONDS = 25  # each POST takes this long: within the longest timeout allowed (ECERT_CALLBACK_TIMEOUT ≤ 30 s)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from start_receiver()


class SlowEndpoint(CallbackSender):
    """Posts for real, but each POST takes POST_SECONDS of the test clock; once the clock has passed a lease's end,
    `meanwhile` runs (another node's job) while this POST is still under way."""

    def __init__(self, clock: FakeClock, meanwhile: Callable[[], None]) -> None:
        super().__init__()
        self.clock, self.meanwhile, self.started = clock, meanwhile, clock()

    def send(self, url: str, callback: SignedCallback) -> DeliveryResult:
        self.clock.advance(seconds=POST_SECONDS)
        if self.clock() - self.started > LEASE:
            meanwhile, self.meanwhile = self.meanwhile, lambda: None
            meanwhile()
        return super().send(url, callback)


def test_a_slow_endpoint_gets_each_callback_once_while_another_node_runs_the_job(
        app: Any, _migrated: str, tmp_path: Path, clock: FakeClock, make_dept_client: Any, login: Any,
        receiver: Receiver, runner: Any) -> None:
    asker = Asker(make_dept_client(SAMR, scopes=("request",)))
    allow_callbacks(app, asker.dept, f"{receiver.base}/ecert")
    request_ids = []
    for _ in range(4):
        request_id = asker.ask(callback_url=f"{receiver.base}/ecert")["id"]
        holder = login()
        # Not closed: the deciding request's own delivery never runs; the callbacks wait for the job.
        assert holder.http.post(f"{API}/{request_id}/decline", headers=holder.headers).status_code == 200
        request_ids.append(request_id)
    other_node = create_app(_settings(_migrated, tmp_path / "other-node", ECERT_CLOCK=clock))
    other_runs: list[str] = []
    app.extensions["ecert.callback_sender"] = SlowEndpoint(clock, lambda: other_runs.append(
        other_node.test_cli_runner().invoke(args=["jobs", "callbacks"]).output))

    try:
        result = runner.invoke(args=["jobs", "callbacks"])
    finally:
        with other_node.app_context():
            db.engine.dispose()

    assert result.exit_code == 0, result.output
    assert len(other_runs) == 1  # the other node's job ran while the third callback was being posted
    delivered = Counter(json.loads(item.body)["request_id"] for item in receiver.received)
    assert delivered == Counter(request_ids)
    for request_id in request_ids:
        row = stored_request(app, request_id)
        assert row.callback_delivered_at is not None and row.callback_attempts == 1
