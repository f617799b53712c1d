"""TensorBoard tags: one naming scheme for every phase (README, "TensorBoard").

======================  ==========================================================================================
``loss/<phase>/…``      what the phase minimises (its total and its terms)
``train/<phase>/…``     the rest of training: batch figures, gradient norms, learning rates, throughput, skipped
                        steps, the periodic diagnostics (``train/<phase>/diagnostics/…``)
``eval/<phase>/…``      held-out figures and pictures of the phase: reconstructions, open-loop predictions, action
                        histograms, imagined rollouts, the dream video, the real-env comparison chart (``results``)
``env/<policy>/…``      one policy in the real environment (``random``, ``frame_blind``, ``bc``, ``pmpo``): the
                        points of its learning curve and its final evaluation, at the step they were played
======================  ==========================================================================================

``<phase>`` is ``phase0`` … ``phase3``; every phase writes into its own folder ``checkpoints/<run>/tb/<phase>``.
"""

from __future__ import annotations

import re

KINDS = ("loss", "train", "eval", "env")
PHASES = ("phase0", "phase1", "phase2", "phase3")


def tag(kind: str, who: int | str, name: str = "") -> str:
    """``<kind>/<who>/<name>``: ``who`` is a phase (0–3 or "phase0" … "phase3") for loss, train and eval, and a
    policy name for env. Without ``name`` it is the prefix that ``Runtime.scalars`` puts before each key:
    ``tag("loss", 1)`` is ``"loss/phase1/"``, ``tag("eval", 2, "results")`` is ``"eval/phase2/results"``."""
    if kind not in KINDS:
        raise ValueError(f"TensorBoard tag kind {kind!r}: expected one of {KINDS}")
    if kind == "env":
        if not isinstance(who, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", who):
            raise ValueError(f"TensorBoard tag env/<policy>: {who!r} is not a policy name (lower case, digits, '_')")
    else:
        who = f"phase{who}" if isinstance(who, int) else who
        if who not in PHASES:
            raise ValueError(f"TensorBoard tag {kind}/<phase>: {who!r} is not one of {PHASES}")
    return f"{kind}/{who}/{name}"
