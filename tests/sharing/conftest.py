"""Fixtures of the sharing tests: the business licence of the company `representative` represents."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Citizen, DeptClient
from tests.support import Department, public_id_of


@pytest.fixture
def licence_identifier(samr_system: DeptClient, company: str, representative: Citizen) -> str:
    """The identifier (证照标识) of `company`'s business licence, issued once `representative` has logged in."""
    return Department(samr_system).issue_to_company(company)


@pytest.fixture
def licence(app: Any, licence_identifier: str) -> str:
    """The wallet id of `company`'s business licence."""
    return public_id_of(app, licence_identifier)
