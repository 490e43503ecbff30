"""The pipeline's one call into the engine.

The engine is matchering 2.0.6's algorithm reimplemented (``mastering.engine.master``)
rather than matchering itself, which this module used to call: matchering is only a
dev dependency for comparisons now. The name and this seam stay: the flow tests
replace ``match_to_reference`` to simulate an engine that fails, is killed or hangs.
"""

from __future__ import annotations

from collections.abc import Callable

from mastering.audio.decode import DecodedAudio
from mastering.engine.master import MasterOptions, MasterResult, master
from mastering.engine.profile import ReferenceProfile
from mastering.jobs.model import Stage

# Progress of the matching stage within the job: 30 % when it starts, 75 % when done.
_FIRST_PERCENT = 30
_LAST_PERCENT = 75


def match_to_reference(
    target: DecodedAudio,
    profile: ReferenceProfile,
    options: MasterOptions,
    *,
    on_stage: Callable[[Stage, int], None],
) -> MasterResult:
    """Master ``target`` against ``profile``; the result is at the target's rate."""

    def report(fraction: float) -> None:
        span = _LAST_PERCENT - _FIRST_PERCENT
        on_stage(Stage.MATCHING, _FIRST_PERCENT + round(span * fraction))

    return master(target, profile, options, on_progress=report)
