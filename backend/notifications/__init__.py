"""Notifications: the holder inbox and the department inbox."""
