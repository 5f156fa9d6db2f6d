"""Tests of backend/notifications: the citizen's inbox and usage history."""
