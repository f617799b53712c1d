"""Phase 3: PMPO imagination RL with TD(lambda) values inside the frozen world model (docs/design.md §6).

    python train_phase3.py --config configs/crafter_tiny.yaml [--phase2-checkpoint PATH] [--set phase3.steps=200]

Loads phase2_final.pt (default checkpoints/<run>/phase2_final.pt; refused if its tokenizer, latent
statistics or action space differ from the cache), freezes the tokenizer, the dynamics, the agent's
trunk, reward and continue heads and a copy of the phase-2 policy (pi_prior), and trains the policy
and value heads on imagined rollouts. Logs to TensorBoard (checkpoints/<run>/tb/phase3), writes
periodic checkpoints and checkpoints/<run>/phase3_final.pt (rerunning the command resumes), then
compares the random, phase-2 (BC) and phase-3 policies in the real env on the same seeds
(phase3_eval.json) and prints the table.
"""

from dreamer.pipeline.phase3 import Phase3
from dreamer.pipeline.runner import run_phase


def main(argv=None) -> dict:
    result = run_phase(Phase3, __doc__, argv)
    if result.get("table"):
        print(result.pop("table"))  # the command's final output: the real-env comparison
    return result


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
