"""Fixtures of the CUDA tests; the builders live in ``cuda_fixtures.py``."""

from __future__ import annotations

from cuda_fixtures import device  # noqa: F401  (the session's device fixture)
