"""The matchering engine behind one function.

We call matchering's own stages on arrays we already decoded and validated,
instead of ``matchering.process`` on files: that skips a second decode and lets us
report its stages as progress. Pinned to matchering 2.0.6, whose stage API this is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matchering
import numpy as np
from matchering.checker import check, check_equality
from matchering.log import ModuleError
from matchering.stages import main

from mastering.audio.decode import DecodedAudio
from mastering.errors import (
    AudioTooLong,
    AudioTooShort,
    IdenticalInputs,
    InternalError,
    InvalidAudio,
    MasteringError,
    UnsupportedFormat,
)
from mastering.jobs.model import Stage

ENGINE_SAMPLE_RATE = 44100

# matchering's info codes (matchering.log.codes.Code) and how far along each is.
_STAGE_PERCENT = {2004: 35, 2005: 50, 2006: 65, 2007: 75}


def _typed_error(code: int) -> MasteringError:
    role = "target" if code < 4100 else "reference"
    kind = code % 100
    if code == 4005:
        return IdenticalInputs("The target and the reference are the same audio")
    if kind == 1:
        return InvalidAudio(f"The {role} could not be read as audio")
    if kind == 2:
        return AudioTooLong(f"The {role} is longer than allowed")
    if kind == 3:
        return AudioTooShort(f"The {role} is too short to master")
    if kind == 4:
        return UnsupportedFormat(f"The {role} has more than two channels")
    return InternalError("The mastering engine failed")


def match_to_reference(
    target: DecodedAudio,
    reference: DecodedAudio,
    *,
    work_dir: Path,
    max_duration_s: float,
    on_stage: Callable[[Stage, int], None],
) -> tuple[np.ndarray, int]:
    """Master ``target`` to sound like ``reference``; returns (stereo float64, 44100)."""

    def on_info(text: Any) -> None:
        code = str(text).split(":", 1)[0]
        if code.isdigit() and int(code) in _STAGE_PERCENT:
            on_stage(Stage.MATCHING, _STAGE_PERCENT[int(code)])

    matchering.log(info_handler=on_info, show_codes=True)
    config = matchering.Config(max_length=max_duration_s + 1.0, temp_folder=str(work_dir))
    try:
        target_array, _ = check(
            target.samples.astype(np.float64), target.sample_rate, config, "target"
        )
        reference_array, _ = check(
            reference.samples.astype(np.float64), reference.sample_rate, config, "reference"
        )
        check_equality(target_array, reference_array)
        result, _, _ = main(target_array, reference_array, config, need_default=True)
    except ModuleError as error:
        # matchering puts its numeric code only in the message: "4005: ...".
        code = str(error).split(":", 1)[0].strip()
        raise _typed_error(int(code) if code.isdigit() else 0) from error
    return result, ENGINE_SAMPLE_RATE
