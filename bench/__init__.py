"""Benchmark of the mastering engine against matchering (``make bench``)."""
