"""Objections (异议): filing, queue and answers, evidence, deadlines, working days."""
