"""Which environment variables the code's settings cannot do without, asked of the
code itself: ``mastering.config.load_settings`` is called with a recording
environment, then once without each name it read. Whatever names it grows, this
finds them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Mapping
from typing import Any

from tests.infra.stack import Deployment, load_template


class _Recording(Mapping[str, str]):
    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.read.add(name)
        return name in self._values

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        return self._values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _load(values: dict[str, str]) -> set[str]:
    """Call load_settings on exactly ``values``; the names it read."""
    from mastering import config

    load = config.load_settings
    recording = _Recording(values)
    clear = getattr(load, "cache_clear", None)
    if clear is not None:
        clear()
    takes_environ = bool(inspect.signature(load).parameters)
    saved = os.environ
    try:
        if takes_environ:
            load(recording)  # type: ignore[call-arg]
        else:
            # Swapped for the call only; the real environment is put back below.
            os.environ = recording  # type: ignore[assignment]  # noqa: B003
            load()
    finally:
        os.environ = saved  # noqa: B003
        if clear is not None:
            clear()
    return recording.read


def required_settings() -> set[str]:
    deployment = Deployment(load_template())
    complete: dict[str, str] = {}
    for function in deployment.functions():
        complete.update(deployment.function_environment(function))
    try:
        read = _load(complete)
    except Exception as error:
        raise AssertionError(
            f"load_settings fails on the template's environment: {error}"
        ) from error
    required = set()
    for name in sorted(read & set(complete)):
        try:
            _load({k: v for k, v in complete.items() if k != name})
        except Exception:  # load_settings refuses to run without it
            required.add(name)
    return required
