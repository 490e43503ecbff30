"""Spectrum's serverless mastering backend."""

from mastering.engine.profile import ENGINE_VERSION

__version__ = "0.1.0"
SERVICE_NAME = "spectrum-mastering"
# The engine the master function runs, reported by GET /health and `--version`. The
# profile module is plain Python (no numpy), so the presign function can import it.
# It names the engine's own version: cached reference profiles are keyed by it.
ENGINE = ENGINE_VERSION

__all__ = ["ENGINE", "SERVICE_NAME", "__version__"]
