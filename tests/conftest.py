"""Tests draw figures but never show them: use the non-interactive backend."""
import matplotlib

matplotlib.use("Agg")
