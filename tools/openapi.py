#!/usr/bin/env python3
"""Write docs/openapi.json: the HTTP API's OpenAPI document, as GET /openapi.json serves it.

The document is generated from the presign function's routes and models; the copy in
docs/ is for readers and client generators without a running stack, and
tests/unit/test_openapi.py fails when it is stale (run `make openapi` then).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "openapi.json"


def generate() -> dict[str, object]:
    # The handler module reads no settings at import; configure() is never called here.
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    spec = importlib.util.spec_from_file_location("presign_app", ROOT / "functions/presign/app.py")
    if spec is None or spec.loader is None:
        raise SystemExit("functions/presign/app.py not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    document: dict[str, object] = module.openapi_document(module.app)
    return document


def render(document: dict[str, object]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main() -> int:
    DOCUMENT.write_text(render(generate()))
    print(f"wrote {DOCUMENT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
