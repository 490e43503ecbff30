"""Spectrum's serverless mastering backend.

The package root imports nothing heavy: ``import mastering`` is what every handler
does first.
"""

from mastering.versions import ENGINE_VERSION, SERVICE_VERSION

__version__ = SERVICE_VERSION
SERVICE_NAME = "spectrum-mastering"
# The engine the master function runs, reported by GET /health and `--version`; cached
# reference profiles are keyed by it.
ENGINE = ENGINE_VERSION

__all__ = ["ENGINE", "SERVICE_NAME", "__version__"]
