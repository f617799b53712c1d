"""Environments (Crafter adapter, generic gymnasium envs), data collection and real-env evaluation."""

from dreamer.envs.config import CollectConfig, EnvConfig

__all__ = ["CollectConfig", "EnvConfig"]
