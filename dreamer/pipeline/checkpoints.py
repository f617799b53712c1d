"""The phases' checkpoint files, named here once, and the handoff from one phase to the next.

Every phase writes periodic checkpoints ``<prefix>_step<N>.pt`` (resumed by rerunning the command) and
phases 1–3 a final one that the next phase starts from; phases 2 and 3 also write their real-env
evaluation as JSON. With ``phase2.keep_best`` phase 2 also keeps the weights of its lowest held-out BC NLL
(``phase2_best.pt``, a phase-2 checkpoint phase 3 can start from). The layout of a checkpoint is :func:`dreamer.training.checkpoint.payload`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from dreamer.agent import AgentConfig
from dreamer.dynamics import DynamicsConfig
from dreamer.presets import from_dict
from dreamer.training.checkpoint import (
    CheckpointError,
    atomic_save,
    load_checkpoint,
    save_periodic,
    state_sha256,
)

log = logging.getLogger(__name__)


class WrongPhaseError(CheckpointError):
    """A checkpoint of another phase than the one a phase starts from."""

PREFIX = {0: "phase0", 1: "phase1", 2: "phase2", 3: "phase3"}  # periodic checkpoints <prefix>_step<N>.pt
FINAL = {1: "phase1_cosmos_final.pt", 2: "phase2_final.pt", 3: "phase3_final.pt"}
EVAL_JSON = {2: "phase2_eval.json", 3: "phase3_eval.json"}
RESULTS_PNG = {2: "phase2_results.png", 3: "phase3_results.png"}  # the real-env comparison as a bar chart
BEST = {2: "phase2_best.pt"}  # phase2.keep_best: the weights of the lowest held-out BC NLL so far
SCRIPT = {0: "train_phase0_tokenizer.py", 1: "train_phase1_cosmos.py", 2: "train_phase2.py", 3: "train_phase3.py"}
# The models a phase's final checkpoint hands on, with the config section each was built from.
HANDOFF = {1: {"dynamics": DynamicsConfig}, 2: {"dynamics": DynamicsConfig, "agent": AgentConfig}}


def handoff_path(cfg, phase: int, given: str | None) -> Path:
    """The final checkpoint of ``phase`` to start the next one from: ``given``, else the run directory's."""
    return Path(given) if given else cfg.run_dir / FINAL[phase]


def load_handoff(path: Path, cfg, phase: int) -> dict:
    """The final checkpoint of ``phase``; ``cfg.dynamics`` (and ``cfg.agent``) become the ones its models
    were trained with. Call it before ``runtime.start``, so the saved config names the models it carries.
    A checkpoint of another phase (checkpoints carry ``phase``) is refused, naming the phase it is."""
    ckpt = load_checkpoint(path)
    have = sorted(ckpt.get("models", {}))
    missing = [k for k in HANDOFF[phase] if k not in have]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks models {missing} (has {have}); phase {phase + 1} needs the "
                         f"{FINAL[phase]} written by {SCRIPT[phase]}")
    found = ckpt.get("phase")
    if found != phase:
        what = (f"a phase-{found} checkpoint (written by {SCRIPT.get(found, '?')})" if found is not None
                else "a checkpoint that does not say its phase")
        raise WrongPhaseError(f"checkpoint {path} is {what}; phase {phase + 1} starts from a phase-{phase} "
                              f"checkpoint: the {FINAL[phase]} written by {SCRIPT[phase]}")
    for key, cls in HANDOFF[phase].items():
        trained = from_dict(cls, ckpt["config"][key], key)
        if trained != getattr(cfg, key):
            log.warning("%s config of %s differs from the given config; using the checkpoint's: %s", key, path, trained)
            setattr(cfg, key, trained)
    return ckpt


def input_record(path: Path, ckpt: dict, phase: int) -> dict:
    """What a run started from ``ckpt`` (``phase``'s checkpoint at ``path``) remembers of it: the path and a
    content hash of the models it hands on (so a rewrite with new evaluation figures is the same input)."""
    models = {k: ckpt["models"][k] for k in HANDOFF[phase]}
    return {PREFIX[phase]: {"path": str(Path(path).resolve()), "sha256": state_sha256(models),
                            "step": ckpt.get("step")}}


def save_final(rt, phase: int, state: dict) -> Path:
    """Rank 0 writes the final checkpoint of ``phase`` (and it as the last periodic one, so a rerun of a
    finished run resumes at its end). ``state`` is stamped with the phase and the run's inputs first."""
    state.update(getattr(rt, "stamp", {}), phase=phase)
    path = rt.run_dir / FINAL[phase]
    atomic_save(state, path)
    save_periodic(rt, PREFIX[phase], state, getattr(rt.cfg, f"phase{phase}").keep_checkpoints)
    log.info("wrote %s", path)
    return path


def best_so_far(rt, phase: int, key: str) -> tuple[float, int | None]:
    """(held-out ``key``, step) of the run's best checkpoint of ``phase``; (inf, None) when there is none
    or it cannot be read (the next held-out evaluation then writes it anew)."""
    path = rt.run_dir / BEST[phase]
    if not path.is_file():
        return math.inf, None
    try:
        ckpt = load_checkpoint(path)
        return float(ckpt["eval"]["heldout"][key]), int(ckpt["step"])
    except (CheckpointError, KeyError, TypeError, ValueError) as e:
        log.warning("%s cannot be read (%s): the next held-out evaluation replaces it", path, e)
        return math.inf, None


def save_best(rt, phase: int, state: dict) -> Path:
    """Rank 0 writes ``state`` (a :func:`dreamer.training.checkpoint.payload` with its held-out ``eval``) as the
    best checkpoint of ``phase``, stamped with the phase and the run's inputs like the final one."""
    state.update(getattr(rt, "stamp", {}), phase=phase)
    path = rt.run_dir / BEST[phase]
    atomic_save(state, path)
    return path


def phase1_eval(ckpt: dict | None, path: str | Path) -> dict | None:
    """Phase 1's held-out figures (open-loop error per horizon, copy-last, action-shuffle ratio) for the checkpoint
    at ``path``: its own when it is phase 1's (``ckpt`` already loaded, or None to load it), else those of the run
    folder's phase-1 final beside it; None when none are found. A damaged file is logged, never raised: the
    figures are a report, not an input."""
    path = Path(path)
    try:
        if ckpt is None and path.is_file():
            ckpt = load_checkpoint(path)
        if ckpt is not None and ckpt.get("phase") == 1:
            return dict(ckpt.get("eval") or {}) or None
        final1 = path.parent / FINAL[1]
        if final1.is_file():
            return dict(load_checkpoint(final1).get("eval") or {}) or None
    except (OSError, ValueError) as e:
        log.warning("%s: could not read phase 1's held-out figures (%s)", path, e)
    return None
