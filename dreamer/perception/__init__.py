"""Optional perception head: Gemma 3 reading Cosmos world latents (``pip install .[perception]``).

``WorldProjector`` and ``EmbeddingFusion`` need only torch; ``GemmaWorldFusion`` and the training
entry point (``python -m dreamer.perception.cli``) need transformers and are imported lazily.
"""

from __future__ import annotations

from .projector import WorldProjector, WorldProjectorConfig
from .records import QAConfig, make_qa_records, read_records, write_records
from .splice import IGNORE_INDEX, EmbeddingFusion, SplicedInputs

_LAZY = {
    "GemmaWorldFusion": "fusion",
    "FusionConfig": "fusion",
    "tiny_gemma3": "tiny",
    "tiny_gemma3_config": "tiny",
    "byte_tokenizer": "tiny",
    "TrainConfig": "trainer",
    "run_ablation": "trainer",
}

__all__ = [
    "IGNORE_INDEX",
    "EmbeddingFusion",
    "FusionConfig",
    "GemmaWorldFusion",
    "QAConfig",
    "SplicedInputs",
    "TrainConfig",
    "WorldProjector",
    "WorldProjectorConfig",
    "byte_tokenizer",
    "make_qa_records",
    "read_records",
    "run_ablation",
    "tiny_gemma3",
    "tiny_gemma3_config",
    "write_records",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
