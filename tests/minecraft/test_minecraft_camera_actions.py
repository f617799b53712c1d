"""Camera μ-law quantiser against hand-computed bins, and the Minecraft action layouts."""

from __future__ import annotations

import numpy as np
import pytest

from dreamer.minecraft.actions import MINERL_V04, VPT, encode_enum, layout_for
from dreamer.minecraft.camera import (
    CAMERA_BINS,
    CAMERA_NULL_BIN,
    dequantize_camera,
    joint_camera_class,
    mu_law_decode,
    mu_law_encode,
    quantize_camera,
)


def test_camera_bins_match_hand_computation():
    # x/10 -> ln(1+10|x|/10)/ln(11) * 10 = e, bin = round((e+10)/2); e.g. x=1: 10*ln2/ln11 = 2.8906 -> 6.445 -> 6
    degrees = [-25, -10, -5, -1, 0, 0.2, 0.3, 1, 2, 3.5, 5, 10, 25]
    expect = [0, 0, 1, 4, 5, 5, 6, 6, 7, 8, 9, 10, 10]
    assert quantize_camera(np.array(degrees)).tolist() == expect
    assert CAMERA_BINS == 11 and CAMERA_NULL_BIN == 5


def test_camera_bin_centres_match_hand_computation():
    # centre of bin b: u = (2b-10)/10, x = sign(u) * (11^|u| - 1) / 10 * 10
    centres = dequantize_camera(np.arange(11))
    hand = {5: 0.0, 6: 11 ** 0.2 - 1, 7: 11 ** 0.4 - 1, 8: 11 ** 0.6 - 1, 9: 11 ** 0.8 - 1, 10: 10.0, 4: -(11 ** 0.2 - 1)}
    for b, x in hand.items():
        assert centres[b] == pytest.approx(x, abs=1e-9)
    assert centres[6] == pytest.approx(0.615394, abs=1e-6)
    assert np.allclose(centres, -centres[::-1])  # symmetric around the still bin


def test_quantiser_inverse_is_exact():
    bins = np.arange(CAMERA_BINS)
    assert np.array_equal(quantize_camera(dequantize_camera(bins)), bins)
    x = np.linspace(-10, 10, 2001)
    assert np.allclose(mu_law_decode(mu_law_encode(x)), x, atol=1e-12)
    grid = np.stack(np.meshgrid(bins, bins), -1).reshape(-1, 2)
    assert np.array_equal(quantize_camera(dequantize_camera(grid)), grid)
    assert joint_camera_class(5, 5) == 60 and joint_camera_class(10, 10) == 120


def test_quantiser_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        quantize_camera(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="bins"):
        dequantize_camera(np.array([11]))


def test_layouts_names_and_cards():
    assert VPT.dims == 23 and MINERL_V04.dims == 15
    assert VPT.names[:8] == ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack")
    assert VPT.names[8:12] == ("use", "pickItem", "inventory", "drop")
    assert VPT.names[-2:] == ("camera_pitch", "camera_yaw") and VPT.cards[-2:] == (11, 11)
    assert MINERL_V04.names[8:] == ("camera_pitch", "camera_yaw", "place", "equip", "craft", "nearbyCraft",
                                    "nearbySmelt")
    assert MINERL_V04.cards == (2,) * 8 + (11, 11, 7, 8, 5, 8, 3)
    assert VPT.space.cards == VPT.cards and layout_for("minerl") is MINERL_V04
    with pytest.raises(KeyError, match="unknown Minecraft action layout"):
        layout_for("atari")


@pytest.mark.parametrize("layout", [MINERL_V04, VPT])
def test_env_action_round_trip_is_exact(layout):
    rng = np.random.default_rng(0)
    for _ in range(50):
        v = np.array([rng.integers(0, c) for c in layout.cards])
        d = layout.to_env_action(v)
        assert d["camera"].shape == (2,)
        assert np.array_equal(layout.from_env_action(d), v)
    assert layout.is_null(layout.noop()[None]).all()
    assert layout.to_env_action(layout.noop())["camera"].tolist() == [0.0, 0.0]


def test_minerl_env_action_fields():
    v = MINERL_V04.noop()
    v[MINERL_V04.index("attack")] = 1
    v[MINERL_V04.index("place")] = 6
    v[MINERL_V04.index("camera_yaw")] = 10
    d = MINERL_V04.to_env_action(v)
    assert d["attack"] == 1 and d["place"] == "torch" and d["camera"][1] == pytest.approx(10.0)
    assert d["nearbySmelt"] == "none"


def test_encode_enum_maps_unknown_to_none():
    idx, unknown = encode_enum(np.array(["none", "coal", "diamond", "iron_ingot"]), ("none", "iron_ingot", "coal"))
    assert idx.tolist() == [0, 2, 0, 1] and unknown == 1
    idx, unknown = encode_enum(np.array([b"coal", b"none"]), ("none", "iron_ingot", "coal"))
    assert idx.tolist() == [2, 0] and unknown == 0
