"""Colours shared by the matplotlib and plotly figures."""

from __future__ import annotations

__all__ = ["DIRECTION_COLORS", "PALETTE"]

PALETTE = (
    "#4C72B0",
    "#DD8452",
    "#55A868",
    "#C44E52",
    "#8172B3",
    "#937860",
    "#DA8BC3",
    "#8C8C8C",
    "#CCB974",
    "#64B5CD",
)  # seaborn "deep"
DIRECTION_COLORS = {"keep": "#4C72B0", "up": "#55A868", "down": "#C44E52", "stem": "#8C8C8C"}
