"""Small helpers around transformers: the grad-mode check at import and loading a tokenizer/processor offline.

Importing this module imports transformers and then checks that grad mode is still on: an import
that switches it off globally would make every later forward pass build no graph, so training would
silently do nothing (or fail far from the cause). The guard is
:func:`dreamer.training.gradmode.ensure_grad_enabled`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transformers import AutoProcessor, AutoTokenizer

from dreamer.training.gradmode import ensure_grad_enabled

logger = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "processor_config.json")


ensure_grad_enabled("importing transformers")


def load_text_tools(src: str | os.PathLike, local: bool):
    """(tokenizer, processor) from a hub id or a local directory; (None, None) when it has none."""
    if local and not any((Path(src) / f).is_file() for f in _TOKENIZER_FILES):
        return None, None
    kw = {"local_files_only": True} if local else {}
    try:
        proc = AutoProcessor.from_pretrained(src, **kw)
    except (OSError, ValueError) as e:
        logger.info("no processor at %s (%s); trying a plain tokenizer", src, e)
        proc = None
    if proc is not None and hasattr(proc, "tokenizer"):
        return proc.tokenizer, proc
    if proc is not None and hasattr(proc, "convert_tokens_to_ids"):
        return proc, None
    try:
        return AutoTokenizer.from_pretrained(src, **kw), None
    except (OSError, ValueError) as e:
        logger.warning("no tokenizer could be loaded from %s (%s); feed token ids directly", src, e)
        return None, None
