"""Spectrum's serverless mastering backend."""

__version__ = "0.1.0"
SERVICE_NAME = "spectrum-mastering"
# The engine the master function runs, reported by GET /health. Kept as a string so
# the presign function can report it without importing matchering.
ENGINE = "matchering 2.0.6"
