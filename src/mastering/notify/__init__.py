"""Telling the outside world that a job ended."""
