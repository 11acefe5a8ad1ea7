"""Test-time batch norm: population statistics, EMA, precise BN, folding, Batch Renormalization (chapter 3)."""
from __future__ import annotations

__all__: list[str] = []
