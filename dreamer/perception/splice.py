"""Splices world-token embeddings into a text embedding sequence.

A prompt marks where the world goes with two adjacent special tokens::

    <bos> ... <start_of_world><end_of_world> <start_of_image> <image_soft_token>×M <end_of_image> question ...

``EmbeddingFusion`` inserts the W = T_lat·N projected world embeddings between the two markers, so
every sequence grows by W positions. The attention mask gets 1 at world positions, labels get -100
(the loss covers text only) and token type ids get 0 (world tokens use the ordinary causal mask;
Gemma 3 gives bidirectional attention only to image tokens, type 1). Prompts put the world block
before the image block (``format_world_block`` in ``prompts.py``); the splice itself works wherever
the pair sits, but each row must contain exactly one adjacent pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

IGNORE_INDEX = -100


@dataclass
class SplicedInputs:
    inputs_embeds: torch.Tensor  # (B, L + W, H)
    attention_mask: torch.Tensor | None  # (B, L + W)
    labels: torch.Tensor | None  # (B, L + W), -100 at world positions
    token_type_ids: torch.Tensor | None  # (B, L + W), 0 at world positions
    world_positions: torch.Tensor  # (B, W) long: where each world embedding landed


class EmbeddingFusion(nn.Module):
    """Finds ``<start_of_world>`` / ``<end_of_world>`` in ``input_ids`` and splices world embeddings between."""

    def __init__(self, start_token_id: int, end_token_id: int):
        super().__init__()
        if start_token_id == end_token_id:
            raise ValueError(f"start and end world token ids must differ, both are {start_token_id}")
        self.start_token_id = int(start_token_id)
        self.end_token_id = int(end_token_id)

    def has_markers(self, input_ids: torch.Tensor) -> bool:
        return bool(((input_ids == self.start_token_id) | (input_ids == self.end_token_id)).any())

    def marker_positions(self, input_ids_bl: torch.Tensor) -> torch.Tensor:
        """(B,) position of ``<start_of_world>`` per row; raises unless each row has one adjacent pair."""
        is_start = input_ids_bl == self.start_token_id
        is_end = input_ids_bl == self.end_token_id
        n_start, n_end = is_start.sum(1), is_end.sum(1)
        bad = torch.nonzero((n_start != 1) | (n_end != 1)).flatten()
        if bad.numel():
            r = int(bad[0])
            raise ValueError(
                f"input_ids row {r} has {int(n_start[r])} <start_of_world> (id {self.start_token_id}) and "
                f"{int(n_end[r])} <end_of_world> (id {self.end_token_id}) tokens; every row needs exactly one of each"
            )
        start_b = is_start.long().argmax(1)
        end_b = is_end.long().argmax(1)
        bad = torch.nonzero(end_b != start_b + 1).flatten()
        if bad.numel():
            r = int(bad[0])
            raise ValueError(
                f"input_ids row {r}: <end_of_world> must directly follow <start_of_world> "
                f"(found them at positions {int(start_b[r])} and {int(end_b[r])})"
            )
        return start_b

    def forward(
        self,
        input_ids_bl: torch.Tensor,
        text_embeds_blh: torch.Tensor,
        world_embeds_bwh: torch.Tensor,
        attention_mask_bl: torch.Tensor | None = None,
        labels_bl: torch.Tensor | None = None,
        token_type_ids_bl: torch.Tensor | None = None,
    ) -> SplicedInputs:
        b, seq_len = input_ids_bl.shape
        if text_embeds_blh.shape[:2] != (b, seq_len):
            raise ValueError(f"text embeddings {tuple(text_embeds_blh.shape)} do not match input_ids {(b, seq_len)}")
        if world_embeds_bwh.ndim != 3 or world_embeds_bwh.shape[0] != b:
            raise ValueError(f"world embeddings must be (B={b}, W, H), got {tuple(world_embeds_bwh.shape)}")
        if world_embeds_bwh.shape[2] != text_embeds_blh.shape[2]:
            raise ValueError(
                f"world embedding width {world_embeds_bwh.shape[2]} != text width {text_embeds_blh.shape[2]}"
            )
        w = world_embeds_bwh.shape[1]
        device = input_ids_bl.device
        start_b1 = self.marker_positions(input_ids_bl)[:, None]
        j_bl = torch.arange(seq_len + w, device=device)[None, :].expand(b, -1)  # output positions
        is_world_bl = (j_bl > start_b1) & (j_bl <= start_b1 + w)
        # Index into cat([text (L), world (W)]): text before the gap keeps its position, text after
        # it moves W to the right, world slot i (= j - start - 1) reads source L + i.
        src_bl = torch.where(j_bl <= start_b1, j_bl, j_bl - w)
        src_bl = torch.where(is_world_bl, seq_len + (j_bl - start_b1 - 1), src_bl)

        world = world_embeds_bwh.to(dtype=text_embeds_blh.dtype, device=text_embeds_blh.device)
        both_bxh = torch.cat([text_embeds_blh, world], dim=1)
        embeds = torch.gather(both_bxh, 1, src_bl[:, :, None].expand(-1, -1, both_bxh.shape[2]))

        def extend(x_bl: torch.Tensor | None, fill: int) -> torch.Tensor | None:
            if x_bl is None:
                return None
            if tuple(x_bl.shape) != (b, seq_len):
                raise ValueError(f"tensor of shape {tuple(x_bl.shape)} does not match input_ids {(b, seq_len)}")
            padded = torch.cat([x_bl, torch.full((b, w), fill, dtype=x_bl.dtype, device=x_bl.device)], dim=1)
            return torch.gather(padded, 1, src_bl)

        world_positions_bw = start_b1 + 1 + torch.arange(w, device=device)[None, :]
        return SplicedInputs(
            inputs_embeds=embeds,
            attention_mask=extend(attention_mask_bl, 1),
            labels=extend(labels_bl, IGNORE_INDEX),
            token_type_ids=extend(token_type_ids_bl, 0),
            world_positions=world_positions_bw,
        )
