"""Episodes on disk and the latent cache every phase reads."""

from dreamer.data.episode import ActionSpace, Episode, EpisodeError, list_episodes, load_episode, save_episode

__all__ = ["ActionSpace", "Episode", "EpisodeError", "list_episodes", "load_episode", "save_episode"]
