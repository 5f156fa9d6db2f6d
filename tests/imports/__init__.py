"""Tests of backend/imports and the import job: batch imports, their queue, spool and short transactions."""
