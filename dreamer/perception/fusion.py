"""Gemma 3 reading Cosmos world latents: ``GemmaWorldFusion`` wraps ``Gemma3ForConditionalGeneration``.

Composition, not a fork: the wrapped model is used as is. The wrapper adds two special tokens
(``<start_of_world>``, ``<end_of_world>``), resizes the embedding table when needed, projects pooled
latents (B, T_lat, N, C) to T_lat·N embeddings with a ``WorldProjector`` and splices them between the
two markers before calling Gemma with ``inputs_embeds``. By default only the projector trains.

Lessons kept here:
- nothing that must train runs under ``torch.no_grad()``; only ``generate`` and the evaluation helpers do;
- if an import (or anything else) left grad mode off globally, ``ensure_grad_enabled`` turns it back on (logged);
- trainable parameters are kept in fp32 even when the frozen model is loaded in bf16/fp16, so a
  ``torch.amp.GradScaler`` can unscale their gradients (it refuses fp16 gradients).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn
from transformers import AddedToken, Gemma3ForConditionalGeneration

from dreamer.atomic import atomic_write_bytes
from dreamer.training.gradmode import ensure_grad_enabled

from .hf_utils import load_text_tools
from .projector import WorldProjector, WorldProjectorConfig
from .splice import EmbeddingFusion, SplicedInputs

logger = logging.getLogger(__name__)

FUSION_FILE = "world_fusion.json"
PROJECTOR_FILE = "world_projector.pt"
FORMAT_VERSION = 1


@dataclass
class FusionConfig:
    latent_channels: int = 16  # C of the pooled latents
    tokens_per_step: int = 16  # N
    max_steps: int = 32  # most latent steps one prompt may carry
    mlp_hidden: int = 0  # projector MLP width (0 = LM hidden size)
    start_token: str = "<start_of_world>"
    end_token: str = "<end_of_world>"
    start_token_id: int | None = None  # set when the tokens are added
    end_token_id: int | None = None
    train_vision_tower: bool = False
    train_language_model: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> FusionConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{FUSION_FILE}: unknown fusion config keys {unknown}")
        return cls(**d)


class GemmaWorldFusion(nn.Module):
    """Gemma 3 with world tokens. ``forward``/``generate`` take ``world_latents`` (B, T_lat, N, C)."""

    def __init__(self, gemma: Gemma3ForConditionalGeneration, cfg: FusionConfig | None = None,
                 tokenizer=None, processor=None):
        super().__init__()
        self.cfg = cfg = cfg or FusionConfig()
        self.gemma = gemma
        self.tokenizer, self.processor = tokenizer, processor
        if cfg.start_token_id is None or cfg.end_token_id is None:
            self._add_world_tokens()
        elif max(cfg.start_token_id, cfg.end_token_id) >= gemma.get_input_embeddings().num_embeddings:
            raise ValueError(
                f"world token ids {cfg.start_token_id}/{cfg.end_token_id} lie outside the embedding table "
                f"({gemma.get_input_embeddings().num_embeddings} rows)"
            )
        pcfg = WorldProjectorConfig(
            latent_channels=cfg.latent_channels, tokens_per_step=cfg.tokens_per_step, max_steps=cfg.max_steps,
            hidden_size=gemma.config.text_config.hidden_size, mlp_hidden=cfg.mlp_hidden,
            output_scale=self._text_embedding_rms(),
        )
        self.projector = WorldProjector(pcfg).to(gemma.get_input_embeddings().weight.device)
        self.splicer = EmbeddingFusion(cfg.start_token_id, cfg.end_token_id)
        self.set_trainable(cfg.train_vision_tower, cfg.train_language_model)

    # ----------------------------------------------------------------- tokens and trainability
    @torch.no_grad()
    def _add_world_tokens(self) -> None:
        """Register the two markers (in the tokenizer when there is one) and give them embedding rows."""
        cfg, emb = self.cfg, self.gemma.get_input_embeddings()
        n_rows = emb.num_embeddings
        if self.tokenizer is not None:
            added = self.tokenizer.add_tokens(
                [AddedToken(t, special=True, normalized=False) for t in (cfg.start_token, cfg.end_token)],
                special_tokens=True,
            )
            ids = self.tokenizer.convert_tokens_to_ids([cfg.start_token, cfg.end_token])
            logger.info("tokenizer: added %d world tokens, ids %s", added, ids)
        else:
            ids = [n_rows, n_rows + 1]
            logger.info("no tokenizer: world tokens get new ids %s", ids)
        if max(ids) >= n_rows:
            self.gemma.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
            emb = self.gemma.get_input_embeddings()
        mean_row = emb.weight[:n_rows].float().mean(0)
        for i in ids:  # fresh rows start at the mean text embedding
            emb.weight[i] = mean_row.to(emb.weight.dtype)
        cfg.start_token_id, cfg.end_token_id = int(ids[0]), int(ids[1])

    @torch.no_grad()
    def _text_embedding_rms(self) -> float:
        emb = self.gemma.get_input_embeddings()
        g = torch.Generator().manual_seed(0)
        ids = torch.randperm(emb.num_embeddings, generator=g)[:4096].to(emb.weight.device)
        return float(emb(ids).float().pow(2).mean().sqrt())

    def _groups(self) -> dict[str, list[nn.Module]]:
        m = self.gemma.model
        return {"vision": [m.vision_tower, m.multi_modal_projector], "language": [m.language_model, self.gemma.lm_head]}

    def set_trainable(self, train_vision_tower: bool = False, train_language_model: bool = False) -> None:
        """Freeze Gemma except the chosen groups; the projector always trains. Trainable weights -> fp32."""
        self.cfg.train_vision_tower, self.cfg.train_language_model = train_vision_tower, train_language_model
        self.gemma.requires_grad_(False)
        chosen = {"vision": train_vision_tower, "language": train_language_model}
        for name, mods in self._groups().items():
            for mod in mods:
                mod.requires_grad_(chosen[name])
                if chosen[name]:
                    mod.float()
        self.projector.requires_grad_(True)
        self.projector.float()
        self.train(self.training)

    def train(self, mode: bool = True) -> GemmaWorldFusion:
        super().train(mode)
        chosen = {"vision": self.cfg.train_vision_tower, "language": self.cfg.train_language_model}
        for name, mods in self._groups().items():
            if not chosen[name]:
                for mod in mods:
                    mod.eval()  # frozen parts never switch to training behaviour
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ----------------------------------------------------------------- inputs
    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        world_latents: torch.Tensor | None = None,
        imagined: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> SplicedInputs:
        """Text embeddings (+ image features at image tokens) with world embeddings spliced in."""
        emb = self.gemma.get_input_embeddings()
        image_id = self.gemma.config.image_token_id
        is_image_bl = input_ids == image_id
        ids = input_ids.masked_fill(is_image_bl, 0) if image_id >= emb.num_embeddings else input_ids
        embeds_blh = emb(ids)
        if pixel_values is not None:
            vision = self.gemma.model.vision_tower
            pix = pixel_values.to(device=embeds_blh.device, dtype=next(vision.parameters()).dtype)
            feats = self.gemma.model.get_image_features(pix, return_dict=True).pooler_output
            if int(is_image_bl.sum()) * embeds_blh.shape[-1] != feats.numel():
                raise ValueError(
                    f"{int(is_image_bl.sum())} image tokens (id {image_id}) in input_ids but the images give "
                    f"{feats.shape[0] * feats.shape[1]} features"
                )
            embeds_blh = embeds_blh.masked_scatter(is_image_bl[..., None], feats.to(embeds_blh.dtype))
        if world_latents is None:
            if self.splicer.has_markers(input_ids):
                raise ValueError("input_ids contain world marker tokens but world_latents is None")
            return SplicedInputs(embeds_blh, attention_mask, labels, token_type_ids,
                                 torch.zeros(input_ids.shape[0], 0, dtype=torch.long, device=input_ids.device))
        if is_image_bl.any():  # the design's order: world block first, then the image block
            first_image_b = torch.where(is_image_bl.any(1), is_image_bl.long().argmax(1), input_ids.shape[1])
            start_b = self.splicer.marker_positions(input_ids)
            if bool((start_b > first_image_b).any()):
                raise ValueError("<start_of_world><end_of_world> must come before the image tokens in input_ids")
        world_bwh = self.projector(world_latents, imagined)
        return self.splicer(input_ids, embeds_blh, world_bwh, attention_mask, labels, token_type_ids)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                world_latents: torch.Tensor | None = None, imagined: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, **kwargs):
        """Gemma's output (``.logits`` (B, L+W, V), ``.loss`` over text labels) with W = T_lat·N world tokens."""
        return self.forward_spliced(input_ids, attention_mask, world_latents, imagined, labels, pixel_values,
                                    token_type_ids, **kwargs)[0]

    def forward_spliced(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                        world_latents: torch.Tensor | None = None, imagined: torch.Tensor | None = None,
                        labels: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                        token_type_ids: torch.Tensor | None = None, **kwargs):
        """``forward`` that also returns the ``SplicedInputs`` (labels/mask aligned with the logits)."""
        sp = self.embed_inputs(input_ids, attention_mask, world_latents, imagined, labels, pixel_values, token_type_ids)
        out = self.gemma(inputs_embeds=sp.inputs_embeds, attention_mask=sp.attention_mask, labels=sp.labels,
                         token_type_ids=sp.token_type_ids, **kwargs)
        return out, sp

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 world_latents: torch.Tensor | None = None, imagined: torch.Tensor | None = None,
                 pixel_values: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                 max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0,
                 eos_token_id: int | list[int] | None = None, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """Decode with a KV cache; returns the new tokens (B, <= max_new_tokens), padded after EOS.

        Batches must be left-padded (positions follow the attention mask).
        """
        sp = self.embed_inputs(input_ids, attention_mask, world_latents, imagined, None, pixel_values, token_type_ids)
        b, seq_len = sp.inputs_embeds.shape[:2]
        mask = sp.attention_mask if sp.attention_mask is not None else torch.ones(b, seq_len, dtype=torch.long)
        mask = mask.to(device=sp.inputs_embeds.device, dtype=torch.long)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        if eos_token_id is None:
            eos_token_id = self.gemma.generation_config.eos_token_id or self.gemma.config.text_config.eos_token_id
        eos_ids = [] if eos_token_id is None else eos_token_id if isinstance(eos_token_id, list) else [eos_token_id]
        eos = torch.tensor(eos_ids, dtype=torch.long, device=mask.device)
        pad = self.gemma.config.text_config.pad_token_id or 0
        out = self.gemma(inputs_embeds=sp.inputs_embeds, attention_mask=mask, position_ids=pos,
                         token_type_ids=sp.token_type_ids, use_cache=True)
        finished = torch.zeros(b, dtype=torch.bool, device=mask.device)
        new_tokens = []
        for _ in range(max_new_tokens):
            logits_bv = out.logits[:, -1].float()
            if do_sample:
                probs = torch.softmax(logits_bv / max(temperature, 1e-5), dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                nxt = logits_bv.argmax(-1)
            nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
            new_tokens.append(nxt)
            finished |= torch.isin(nxt, eos)
            if bool(finished.all()):
                break
            mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype, device=mask.device)], dim=1)
            pos = pos[:, -1:] + 1
            out = self.gemma(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                             past_key_values=out.past_key_values, use_cache=True)
        return torch.stack(new_tokens, dim=1)

    # ----------------------------------------------------------------- save / load
    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """Writes Gemma (resized), tokenizer/processor when present, the projector and ``world_fusion.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.gemma.save_pretrained(out)
        if self.processor is not None:
            self.processor.save_pretrained(out)
        elif self.tokenizer is not None:
            self.tokenizer.save_pretrained(out)
        torch.save(self.projector.state_dict(), out / PROJECTOR_FILE)
        meta = {"format_version": FORMAT_VERSION, "fusion": asdict(self.cfg), "projector": self.projector.cfg.to_dict()}
        # written last, atomically: a half-saved folder is not taken for a fusion model
        atomic_write_bytes(out / FUSION_FILE, json.dumps(meta, indent=2).encode())
        return out

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike, cfg: FusionConfig | None = None,
                        dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                        load_tokenizer: bool = True) -> GemmaWorldFusion:
        """A saved fusion folder, or plain Gemma 3 weights (hub id or local folder) plus a fresh projector.

        For a saved fusion folder, ``cfg`` may only change the trainable groups.
        """
        src = str(name_or_dir)
        local = Path(src).is_dir()
        kw = {"local_files_only": True} if local else {}
        gemma = Gemma3ForConditionalGeneration.from_pretrained(src, dtype=dtype, **kw)
        ensure_grad_enabled("loading Gemma 3")
        if device is not None:
            gemma.to(device)
        tok, proc = load_text_tools(src, local) if load_tokenizer else (None, None)
        fusion_file = Path(src) / FUSION_FILE
        if not (local and fusion_file.is_file()):
            logger.info("loaded plain Gemma 3 from %s; the world projector starts untrained", src)
            return cls(gemma, cfg, tok, proc)
        try:
            meta = json.loads(fusion_file.read_text())
            saved = FusionConfig.from_dict(meta["fusion"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{fusion_file}: unreadable fusion config ({e})") from e
        if cfg is not None:
            saved.train_vision_tower, saved.train_language_model = cfg.train_vision_tower, cfg.train_language_model
        if tok is not None:
            ids = tok.convert_tokens_to_ids([saved.start_token, saved.end_token])
            if ids != [saved.start_token_id, saved.end_token_id]:
                raise ValueError(f"{src}: tokenizer maps the world tokens to {ids}, but {FUSION_FILE} says "
                                 f"{[saved.start_token_id, saved.end_token_id]}")
        model = cls(gemma, saved, tok, proc)
        state = torch.load(Path(src) / PROJECTOR_FILE, map_location="cpu", weights_only=True)
        model.projector.load_state_dict(state)
        return model
