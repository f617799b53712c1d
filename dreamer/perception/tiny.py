"""A tiny random Gemma 3 and a byte-level tokenizer, for tests and for running the head without weights.

The model has Gemma 3's real architecture (``Gemma3ForConditionalGeneration`` with a SigLIP vision
tower), only small and randomly initialised. Its vocabulary is 6 special tokens (ids fixed to match
the config: pad 0, eos 1, bos 2, <start_of_image> 3, <end_of_image> 4, <image_soft_token> 5)
followed by the 256 byte-level symbols, so any text can be tokenised offline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<start_of_image>", "<end_of_image>", "<image_soft_token>")
PAD_ID, EOS_ID, BOS_ID, BOI_ID, EOI_ID, IMAGE_ID = range(6)
TINY_VOCAB = len(SPECIAL_TOKENS) + 256


@dataclass
class TinyGemmaConfig:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    vision_hidden: int = 32
    vision_layers: int = 1
    image_size: int = 16
    patch_size: int = 4
    mm_tokens_per_image: int = 4
    sliding_window: int = 512


def tiny_gemma3_config(c: TinyGemmaConfig | None = None) -> Gemma3Config:
    c = c or TinyGemmaConfig()
    text = Gemma3TextConfig(
        vocab_size=TINY_VOCAB, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim, query_pre_attn_scalar=c.head_dim, max_position_embeddings=2048,
        sliding_window=c.sliding_window, pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=BOS_ID,
    )
    vision = SiglipVisionConfig(
        hidden_size=c.vision_hidden, intermediate_size=2 * c.vision_hidden, num_hidden_layers=c.vision_layers,
        num_attention_heads=2, image_size=c.image_size, patch_size=c.patch_size,
    )
    return Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=c.mm_tokens_per_image,
        boi_token_index=BOI_ID, eoi_token_index=EOI_ID, image_token_index=IMAGE_ID,
    )


def tiny_gemma3(c: TinyGemmaConfig | None = None) -> Gemma3ForConditionalGeneration:
    """A randomly initialised small Gemma 3 (seed it with torch.manual_seed for reproducibility)."""
    logger.warning("building a tiny RANDOM Gemma 3 (no pretrained weights): answers come only from training here")
    return Gemma3ForConditionalGeneration(tiny_gemma3_config(c))


def byte_tokenizer():
    """A byte-level ``PreTrainedTokenizerFast`` matching the tiny vocabulary; prepends <bos>."""
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(list(SPECIAL_TOKENS))
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS_ID)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", padding_side="right",
    )
