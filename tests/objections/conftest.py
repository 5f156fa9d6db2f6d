"""Fixtures of the objection tests: 民政局's system working its queue, and the citizen's marriage certificate."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import CIVIL_AFFAIRS, Citizen
from tests.objections.objection_support import Queue
from tests.support import Held, marriage_of


@pytest.fixture
def civil_queue(make_dept_client: Any) -> Queue:
    """民政局's business system: issues marriage certificates and works its objection queue."""
    return Queue.of(make_dept_client(CIVIL_AFFAIRS, scopes=("issue", "objections")))


@pytest.fixture
def held(app: Any, citizen: Citizen, civil_queue: Queue) -> Held:
    """`citizen`'s marriage certificate, issued by `civil_queue`'s system."""
    return marriage_of(citizen, app, civil_queue.api.dept)
