"""Clip data: loading and validation, 2D pose front end, wave analysis, synthetic clips."""
