"""Pytest fixtures for the Minecraft tests (the writers live in ``mc_fixtures.py``)."""

from mc_fixtures import make_minerl_traj, make_vpt_pair

__all__ = ["make_minerl_traj", "make_vpt_pair"]
