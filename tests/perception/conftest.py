from __future__ import annotations

import pytest

pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_cfg():
    from dreamer.perception.tiny import TinyGemmaConfig

    return TinyGemmaConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                           head_dim=16, vision_hidden=16, image_size=16, patch_size=4, mm_tokens_per_image=4)
