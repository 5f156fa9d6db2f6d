"""Tests of backend/kernel: certificate identifiers, holder codes and organisation codes."""
