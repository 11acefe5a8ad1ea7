"""Normalization across axes and in recurrent networks (chapter 5)."""
from __future__ import annotations

__all__: list[str] = []
