"""Phase 1: train the dynamics model with shortcut forcing on cached Cosmos latents (docs/design.md §4).

    python train_phase1_cosmos.py --config configs/crafter_tiny.yaml [--set phase1.steps=2000]

Builds or reuses the latent cache, trains, logs to TensorBoard (checkpoints/<run>/tb/phase1), writes
periodic checkpoints and checkpoints/<run>/phase1_cosmos_final.pt. Rerunning the command resumes.
"""

from dreamer.pipeline.phase1 import Phase1
from dreamer.pipeline.runner import run_phase


def main(argv=None) -> dict:
    return run_phase(Phase1, __doc__, argv)


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
