"""Versions reported by GET /health and ``--version``. Imports nothing."""

from __future__ import annotations

from typing import Final

SERVICE_VERSION: Final = "0.1.0"
# Changes whenever a reference profile's meaning changes (analysis parameters, what is
# stored, how it is derived): cached profiles of another version are never used.
# 3: references not at 44.1 kHz are analysed as resampy resamples them for matchering.
# 4: presets are shapes rendered at their own loudness (17 presets); true-peak masters.
ENGINE_VERSION: Final = "spectrum-engine-4 (matchering-2.0.6 analysis, 44100 Hz, fft 4096)"
