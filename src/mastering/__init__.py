"""Spectrum's serverless mastering backend.

The package root imports nothing heavy: ``import mastering`` is what every handler
does first.
"""

from mastering.versions import ENGINE_VERSION, SERVICE_VERSION

__version__ = SERVICE_VERSION
SERVICE_NAME = "spectrum-mastering"
# CloudWatch namespace of the functions' metrics. In the code, not only in the
# template's POWERTOOLS_METRICS_NAMESPACE: Powertools refuses to flush metrics without
# one, and the local stack runs the handlers in a process whose environment it leaves
# alone.
METRICS_NAMESPACE = "SpectrumMastering"
# The engine the master function runs, reported by GET /health and `--version`; cached
# reference profiles are keyed by it.
ENGINE = ENGINE_VERSION

__all__ = ["ENGINE", "METRICS_NAMESPACE", "SERVICE_NAME", "__version__"]
