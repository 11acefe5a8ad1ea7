"""Figures of graphs and tensor blocks drawn with matplotlib (chapters 1 and 5)."""
from __future__ import annotations

__all__: list[str] = []
