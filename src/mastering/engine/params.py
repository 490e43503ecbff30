"""The numbers that define matchering 2.0.6's sound, in one place.

They are matchering's ``Config``/``LimiterConfig`` defaults. The engine reproduces its
stages with these values; changing any of them changes what a reference profile means,
so ``ENGINE_VERSION`` (``mastering.engine.profile``) must change with them.
"""

from __future__ import annotations

from typing import Final

# matchering analyses everything at 44.1 kHz; profiles hold 44.1 kHz-derived spectra.
INTERNAL_RATE: Final = 44_100
# Tracks are cut into equal pieces of at most 15 s; the loudest ones are analysed.
MAX_PIECE_FRAMES: Final = 15.0 * INTERNAL_RATE
# (2**15 - 61) / 2**15: the limiter's ceiling, a hair under full scale for 16-bit.
THRESHOLD: Final = (2**15 - 61) / 2**15
# Floor for divisions and spectra, so silence never divides by zero.
MIN_VALUE: Final = 1e-6
# Analysis frame (and FIR length at 44.1 kHz): 4096 samples, about 93 ms.
FFT_SIZE: Final = 4096
SPECTRUM_BINS: Final = FFT_SIZE // 2 + 1
# The matching curve is smoothed on a log-frequency grid this many times denser.
LIN_LOG_OVERSAMPLING: Final = 4
RMS_CORRECTION_STEPS: Final = 4
LOWESS_FRAC: Final = 0.0375
LOWESS_DELTA: Final = 0.001

# Limiter ("Hyrax"): times in ms, filter corners in Hz.
LIMITER_ATTACK_MS: Final = 1.0
LIMITER_HOLD_MS: Final = 1.0
LIMITER_RELEASE_MS: Final = 3000.0
LIMITER_ATTACK_FILTER_COEFFICIENT: Final = -2.0
LIMITER_HOLD_FILTER_ORDER: Final = 1
LIMITER_HOLD_FILTER_HZ: Final = 7.0
LIMITER_RELEASE_FILTER_ORDER: Final = 1
LIMITER_RELEASE_FILTER_COEFFICIENT: Final = 800.0
