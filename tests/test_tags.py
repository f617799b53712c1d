"""The TensorBoard naming scheme (dreamer.tags): loss/<phase>/, train/<phase>/, eval/<phase>/, env/<policy>/."""

from __future__ import annotations

import pytest

from dreamer.tags import tag


def test_the_four_kinds_of_tags():
    assert tag("loss", 1) == "loss/phase1/" and tag("train", "phase3", "diagnostics/") == "train/phase3/diagnostics/"
    assert tag("eval", 2, "results") == "eval/phase2/results" and tag("env", "frame_blind") == "env/frame_blind/"
    with pytest.raises(ValueError, match="kind 'agent'"):
        tag("agent", 2)
    with pytest.raises(ValueError, match="'phase4' is not one of"):
        tag("eval", 4)
    with pytest.raises(ValueError, match="'Phase 3' is not a policy name"):
        tag("env", "Phase 3")
