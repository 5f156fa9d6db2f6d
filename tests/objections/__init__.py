"""Tests of backend/objections: filing, the department queue, deadlines, evidence and department reports."""
