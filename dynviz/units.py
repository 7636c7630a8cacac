"""One rule for showing costs everywhere (reports, tables, the explorer): MACs with an automatic
prefix.

Costs are stored in GMACs (1 MAC = 1 multiply-add = the paper's FLOP). They are *shown* in GMACs
when the largest value of a table (or the value itself) is at least 1 GMAC, in MMACs when it is
at least 1 MMAC, else in KMACs, with four significant digits: a 64x64 demo network reads
"9.997 MMACs", the paper's Layer16 "119.5 GMACs".
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["GIGA", "MAC_NOTE", "MacUnit", "format_macs", "mac_unit"]

MAC_NOTE = "1 MAC = 1 multiply-add = the paper's FLOP"

GIGA = 1e9
"""MACs per GMAC: costs are counted in MACs (:mod:`dynviz.model.cost`) and stored in GMACs."""


class MacUnit(tuple):
    """``(label, factor)``: multiply GMACs by ``factor`` to express them in ``label``."""

    __slots__ = ()

    def __new__(cls, label: str, factor: float) -> MacUnit:
        return super().__new__(cls, (label, factor))

    @property
    def label(self) -> str:
        return self[0]

    @property
    def factor(self) -> float:
        return self[1]

    def __call__(self, gmacs: float) -> float:
        """``gmacs`` in this unit."""
        return gmacs * self.factor


_UNITS = (MacUnit("GMACs", 1.0), MacUnit("MMACs", 1e3), MacUnit("KMACs", 1e6))


def mac_unit(gmacs: float | Iterable[float]) -> MacUnit:
    """The unit for a value, or for a column of values (chosen by the largest finite one).

    Args:
        gmacs: a cost or costs in GMACs.
    """
    values = [gmacs] if isinstance(gmacs, (int, float)) else list(gmacs)
    finite = [abs(float(v)) for v in values if v is not None and math.isfinite(float(v))]
    top = max(finite, default=1.0)
    for unit in _UNITS:
        if top * unit.factor >= 1.0:
            return unit
    return _UNITS[-1]


def format_macs(gmacs: float | None, unit: MacUnit | None = None, *, digits: int = 4) -> str:
    """``gmacs`` as text with its unit, e.g. ``"9.997 MMACs"`` (``"n/a"`` when missing).

    Args:
        gmacs: a cost in GMACs.
        unit: the unit to use (default: :func:`mac_unit` of the value).
        digits: significant digits.
    """
    if gmacs is None or not math.isfinite(float(gmacs)):
        return "n/a"
    unit = unit or mac_unit(float(gmacs))
    return f"{unit(float(gmacs)):.{digits}g} {unit.label}"
