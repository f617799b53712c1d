"""Phase 0: fit the Cosmos tokenizer to the episode frames through the pooled bottleneck (docs/tokenizer.md).

    python train_phase0_tokenizer.py --config configs/crafter_small.yaml [--set phase0.steps=500]

Trains ``AutoencoderKLCosmos`` (a fresh ``tokenizer.preset``, or fine-tunes ``phase0.init_from`` /
``tokenizer.pretrained`` when those hold weights) as encode → pool → unpool → decode on clips of
1 + S·k frames, logs held-out reconstructions to TensorBoard (checkpoints/<run>/tb/phase0), writes
periodic checkpoints, and saves the fitted tokenizer with ``save_pretrained`` into
``phase0.out_dir`` (default checkpoints/<run>/tokenizer). Phases 1–3 load it frozen through
``tokenizer.pretrained``. Rerunning the command resumes.

With ``tokenizer.kind: crafter_state`` (the privileged-state reference, dreamer/tokenizer/crafter_state.py)
there is nothing to fit: the phase collects the episodes (when ``data.collect`` and too few are there), logs
that, and exits.
"""

from dreamer.pipeline.phase0 import Phase0
from dreamer.pipeline.runner import run_phase


def main(argv=None) -> dict:
    return run_phase(Phase0, __doc__, argv)


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
