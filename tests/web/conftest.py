"""Fixtures of the page tests: the citizen's marriage certificate, and the app served on a localhost port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server

from tests.conftest import Citizen, DeptClient
from tests.support import Held, marriage_of


@pytest.fixture
def held(app: Any, citizen: Citizen, civil_issuer: DeptClient) -> Held:
    """`citizen`'s marriage certificate, issued by `civil_issuer`."""
    return marriage_of(citizen, app, civil_issuer)


@pytest.fixture
def live_server(app: Any) -> Iterator[str]:
    """The real app (werkzeug, threaded) on a free localhost port, over the test database file."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
