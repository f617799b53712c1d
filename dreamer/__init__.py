"""DreamerV4-style agents on a frozen NVIDIA Cosmos video tokenizer.

Layout (README, "How the code is laid out"): foundations ``atomic``, ``presets``, ``transformer``;
``training`` (checkpoints, runtime, schedules, the grad-mode guard); ``data`` (episodes, the latent
cache, clips); ``tokenizer`` (frozen Cosmos wrapper); ``envs`` (Crafter and gymnasium, collection,
real-env evaluation); ``minecraft`` (MineRL / VPT readers); ``dynamics`` (phase 1); ``agent`` (phases
2-3 heads and maths, acting); ``imagination`` (phase-3 rollouts and losses); ``perception`` (optional
Gemma 3 fusion head); ``config`` (the run's Config); ``pipeline`` (the hallway between the phases).
The contract between them: docs/design.md.
"""

__all__ = ["CosmosTokenizerWrapper", "load_agent"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import dreamer.minecraft` (data conversion) need not pay for importing torch and diffusers.
    if name == "CosmosTokenizerWrapper":
        from dreamer.tokenizer import CosmosTokenizerWrapper

        return CosmosTokenizerWrapper
    if name == "load_agent":  # a trained agent that acts in its env (dreamer/evaluate.py)
        from dreamer.evaluate import load_agent

        return load_agent
    raise AttributeError(f"module 'dreamer' has no attribute {name!r}")
