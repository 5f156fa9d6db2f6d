"""Tests of backend/identity: citizen login and sessions, login providers, staff log-in races, department clients."""
