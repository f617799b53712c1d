"""DreamerV4-style agents on a frozen NVIDIA Cosmos video tokenizer.

Layout: ``tokenizer`` (frozen Cosmos wrapper), ``data`` (episodes and the latent cache), ``envs``
(Crafter and gymnasium, collection, evaluation), ``minecraft`` (MineRL / VPT readers), ``dynamics``
(phase 1), ``agent`` (phases 2-3 heads and maths), ``imagination`` (phase-3 rollouts), ``training``
(checkpoints, runtime, schedules), ``perception`` (optional Gemma 3 fusion head).
"""

__all__ = ["CosmosTokenizerWrapper"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import dreamer.minecraft` (data conversion) need not pay for importing torch and diffusers.
    if name == "CosmosTokenizerWrapper":
        from dreamer.tokenizer import CosmosTokenizerWrapper

        return CosmosTokenizerWrapper
    raise AttributeError(f"module 'dreamer' has no attribute {name!r}")
