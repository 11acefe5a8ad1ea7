"""Experiments and figures on what gamma and beta do (chapter 2)."""
from __future__ import annotations

__all__: list[str] = []
