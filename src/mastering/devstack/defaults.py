"""Defaults shared by the local stack and the commands that talk to it.

Kept import-free so ``mastering submit --help`` does not load the stack.
"""

from __future__ import annotations

LOCAL_HOST = "127.0.0.1"
API_PORT = 3000
S3_PORT = 5000
API_KEY = "local-dev-key"
API_URL = f"http://{LOCAL_HOST}:{API_PORT}"
# The Spectrum UI's dev server (Vite), as template.yaml's AllowedOrigins default.
ALLOWED_ORIGINS = ("http://localhost:5173",)

# Environment variables the commands read their defaults from.
ENV_API_PORT = "MASTERING_API_PORT"
ENV_S3_PORT = "MASTERING_S3_PORT"
ENV_API_KEY = "MASTERING_API_KEY"
ENV_API_URL = "MASTERING_API_URL"
ENV_ALLOWED_ORIGINS = "MASTERING_ALLOWED_ORIGINS"
ENV_FUNCTIONS_DIR = "MASTERING_FUNCTIONS_DIR"

# The master function's timeout: template.yaml's MasterTimeout default, as
# ``mastering.config.DEFAULT_MASTER_TIMEOUT_S`` (kept import-free here; a test checks
# the three agree).
MASTER_TIMEOUT_S = 840
