"""Tests of backend/sharing: access requests, grants, redemption, counter service and callbacks."""
