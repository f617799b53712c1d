"""Phase 2: agent trunk + policy/reward/continue heads by behaviour cloning on cached latents (docs/design.md §5).

    python train_phase2.py --config configs/crafter_tiny.yaml \
        [--checkpoint checkpoints/crafter_tiny/phase1_cosmos_final.pt] [--set phase2.steps=2000]

Loads the phase-1 dynamics (frozen, carried forward), refuses a checkpoint whose tokenizer, latent
statistics or action space differ from the cache, trains the agent, logs to TensorBoard
(checkpoints/<run>/tb/phase2), writes periodic checkpoints and checkpoints/<run>/phase2_final.pt (with phase2.keep_best also
phase2_best.pt, the weights of the lowest held-out BC NLL), then
evaluates the BC policy in the real env next to a uniform random policy and a policy sampling the data's
action frequencies without looking at the frames, all on the same seeds (phase2_eval.json).
Rerunning the command resumes.
"""

from dreamer.pipeline.phase2 import Phase2
from dreamer.pipeline.runner import run_phase


def main(argv=None) -> dict:
    return run_phase(Phase2, __doc__, argv)


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
