"""Probes and variants for the why-does-it-work experiments (chapter 4)."""
from __future__ import annotations

__all__: list[str] = []
