"""Turns QA records into model inputs: prompt text, token ids, labels and world-latent windows.

Prompt layout (the world block comes before any image block)::

    plain tokenizer: <bos><start_of_world><end_of_world>Question: {prompt}\\nAnswer: {answer}<eos>
    chat template:   the user turn holds "<start_of_world><end_of_world>{prompt}", the answer is the
                     model turn, ended by <end_of_turn> when the tokenizer has it

Without world tokens the two markers are left out, so the text-only arm sees exactly the same
question. Labels are -100 on the prompt: the loss and the accuracy cover the answer and its end token.
The world latents for a record at latent step k are the ``window`` steps k-window+1 … k (standardised;
steps before 0 repeat step 0), so the last world step is the one the question is about.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .splice import IGNORE_INDEX


@dataclass
class PromptFormat:
    start_token: str = "<start_of_world>"
    end_token: str = "<end_of_world>"

    def prompt_text(self, tokenizer, question: str, with_world: bool, image_block: str = "") -> str:
        block = (self.start_token + self.end_token if with_world else "") + image_block
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template([{"role": "user", "content": block + question}],
                                                 tokenize=False, add_generation_prompt=True)
        return f"{block}Question: {question}\nAnswer: "

    @staticmethod
    def answer_end(tokenizer) -> str:
        if getattr(tokenizer, "chat_template", None):
            eot = tokenizer.convert_tokens_to_ids("<end_of_turn>")
            if eot is not None and eot != tokenizer.unk_token_id:
                return "<end_of_turn>"
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has no eos token to end answers with")
        return tokenizer.eos_token


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    world_tnc: np.ndarray | None  # float32 (window, N, C) standardised, None for the text-only arm
    record: dict


def encode_record(tokenizer, record: dict, fmt: PromptFormat, with_world: bool,
                  latents_lnc: np.ndarray | None, window: int) -> Example:
    """One record -> ids/labels (+ its latent window). ``latents_lnc``: standardised (L, N, C)."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    prompt = fmt.prompt_text(tokenizer, record["prompt"], with_world)
    p_ids = tokenizer(prompt, add_special_tokens=not chat)["input_ids"]
    a_ids = tokenizer(record["answer"] + fmt.answer_end(tokenizer), add_special_tokens=False)["input_ids"]
    world = None
    if with_world:
        if latents_lnc is None:
            raise ValueError(f"no latents for episode '{record['episode']}'")
        k, n_steps = int(record["step"]), latents_lnc.shape[0]
        if k >= n_steps:
            raise ValueError(f"record for episode '{record['episode']}' asks about latent step {k}, "
                             f"but the episode has {n_steps} latent steps")
        idx = np.clip(np.arange(k - window + 1, k + 1), 0, None)
        world = latents_lnc[idx].astype(np.float32)
    return Example(p_ids + a_ids, [IGNORE_INDEX] * len(p_ids) + a_ids, world, record)


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids/attention_mask/labels (B, L) and world_latents (B, window, N, C)."""
    length = max(len(e.input_ids) for e in examples)
    b = len(examples)
    ids = torch.full((b, length), pad_id, dtype=torch.long)
    labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((b, length), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    has_world = {e.world_tnc is not None for e in examples}
    if len(has_world) > 1:
        raise ValueError("a batch mixes examples with and without world latents")
    if has_world == {True}:
        batch["world_latents"] = torch.from_numpy(np.stack([e.world_tnc for e in examples]))
    return batch


def answer_correct(logits_blv: torch.Tensor, labels_bl: torch.Tensor) -> torch.Tensor:
    """(B,) bool: greedy next-token predictions match every labelled token (teacher forcing).

    This equals "greedy decoding after the prompt produces exactly the answer and its end token".
    """
    pred_bl = logits_blv[:, :-1].argmax(-1)
    target_bl = labels_bl[:, 1:]
    valid_bl = target_bl != IGNORE_INDEX
    return ((pred_bl == target_bl) | ~valid_bl).all(1) & valid_bl.any(1)
