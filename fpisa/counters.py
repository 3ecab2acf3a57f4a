"""Event counters: one small base class for the switch's, the workers', the
leaves' and the fault injector's counters (each class only names its own)."""

from __future__ import annotations

__all__ = ["Counters"]


class Counters:
    """Named integer counters, all starting at 0, with :meth:`as_dict`.

    A subclass lists its counters in ``NAMES`` and says what each counts in
    its docstring. Counters are plain attributes (``c.sent += 1``).
    """

    NAMES: tuple[str, ...] = ()

    def __init__(self, **values: int):
        unknown = sorted(set(values) - set(self.NAMES))
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown counters {unknown}; known: {list(self.NAMES)}")
        for name in self.NAMES:
            setattr(self, name, int(values.get(name, 0)))

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.NAMES}

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.as_dict() == self.as_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"
