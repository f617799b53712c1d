"""Dream videos: frame counts at the full frame rate for any S, panels and captions, MP4 and
TensorBoard output, the phase hook (and that a failure there is a warning, not a crash), the CLI."""

from __future__ import annotations

import logging
import types

import av
import numpy as np
import pytest
import torch

from dreamer import dream
from dreamer.training.checkpoint import load_checkpoint
from dreamer.viewer.frames import compose, decode_each, decode_frames
from dreamer.viewer.load import load_world
from dreamer.viewer.video import add_animation, dream_clip, phase_video, write_mp4


@pytest.fixture(scope="module")
def world(crafter_run):
    return load_world(crafter_run["phase2"], device="cpu")


@pytest.mark.parametrize("T", [1, 2, 3, 5])
def test_decode_frames_full_rate(world, T):
    tok, cache = world.tokenizer, world.cache
    z = torch.randn(2, T, tok.num_tokens, tok.channels)
    frames = decode_frames(tok, z, cache.mean, cache.std, 64)
    assert frames.shape == (2, 1 + world.S * (T - 1), 64, 64, 3) and frames.dtype == np.uint8
    # the first latent alone decodes to the same frame as in the full sequence (the decoder is causal)
    alone = decode_each(tok, z[:, :1], cache.mean, cache.std, 64)[:, 0]
    assert np.abs(frames[:, 0].astype(int) - alone.astype(int)).max() <= 1  # up to float rounding


class LabelDecoder:
    """Decodes like a causal video tokenizer with temporal compression S, but each output frame holds
    (latent index, sub-frame) in its pixels, so the window stitching can be read back for any S."""

    def __init__(self, S: int, m: int):
        self.S, self.cfg = S, types.SimpleNamespace(window_latents=m)

    def decode(self, z, mean=None, std=None, size=None):
        ids = z[0, :, 0, 0].round().long().tolist()  # latent k carries k in its first value
        frames = [(ids[0], 0)] + [(k, i + 1) for k in ids[1:] for i in range(self.S)]
        return torch.tensor(frames, dtype=torch.uint8)[None, :, None, None, :].expand(1, -1, 2, 2, 2)


@pytest.mark.parametrize("S", [1, 2, 4, 8])
@pytest.mark.parametrize("m", [1, 2, 4])
def test_window_stitching_for_any_S(S, m):
    T = 7
    z = torch.arange(T, dtype=torch.float32)[None, :, None, None].expand(1, T, 1, 1)
    frames = decode_frames(LabelDecoder(S, m), z, None, None, 2)[0, :, 0, 0]  # (F, 2): (latent, sub-frame)
    expected = [(0, 0)] + [(k, i + 1) for k in range(1, T) for i in range(S)]
    assert frames.tolist() == [list(e) for e in expected]


@pytest.mark.parametrize("run", ["crafter_run", "s4_run"])
def test_dream_clip_panels_and_captions(run, request):
    w = load_world(request.getfixturevalue(run)["phase2"], device="cpu")
    name = w.cache.val_names[0]
    clip = dream_clip(w.tokenizer, w.cache, w.dynamics, w.agent, name, context=2, horizon=2,
                      generator=torch.Generator().manual_seed(0))
    S, n = w.S, 1 + w.S * 3
    assert list(clip.panels) == ["real", "reconstructed", "open loop", "imagined"]
    assert all(p.shape == (n, 64, 64, 3) for p in clip.panels.values())
    e = w.cache.episode(name)
    real = np.load(w.cache.manifest["sources"][name]["path"])["frames"]
    np.testing.assert_array_equal(clip.panels["real"], real[:n])
    context = [c for c in clip.captions if "context" in c]
    assert len(context) == 1 + S and sum("dream 2/2" in c for c in clip.captions) == S
    assert "agent:" in clip.captions[-1] and "real:" in clip.captions[-1] and len(e) >= 3
    # the context part of the open-loop panel is the context itself, decoded
    ctx_open, ctx_rec = (clip.panels[k][: 1 + S].astype(int) for k in ("open loop", "reconstructed"))
    assert np.abs(ctx_open - ctx_rec).max() <= 1
    # a phase-1 checkpoint: no agent, no imagined panel
    w1 = load_world(request.getfixturevalue(run)["phase1"], device="cpu")
    clip1 = dream_clip(w1.tokenizer, w1.cache, w1.dynamics, None, name, context=1)
    assert "imagined" not in clip1.panels and clip1.horizon == len(e) - 1  # as long as the episode allows


def test_mp4_and_tensorboard_animation(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    video = compose({"a": frames, "b": frames}, [f"frame {i}" for i in range(6)], scale=2)
    assert video.shape[1] % 2 == 0 and video.shape[2] % 2 == 0
    path = write_mp4(video, tmp_path / "x.mp4", fps=5)
    with av.open(str(path)) as box:
        decoded = [f.to_ndarray(format="rgb24") for f in box.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].shape == video.shape[1:]
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    add_animation(writer, "dream/a|b", video, 3, fps=5)
    writer.close()
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    acc.Reload()
    (img,) = acc.Images("dream/a|b")
    assert img.step == 3 and img.encoded_image_string.startswith(b"GIF89a")


def _runtime(run, tmp_path, writer=None):
    return types.SimpleNamespace(is_main=True, cfg=run["cfg"], run_dir=tmp_path, writer=writer,
                                 device=torch.device("cpu"), phase="phase2")


def test_phase_hook_writes_video_and_warns_on_failure(crafter_run, world, tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    payload = load_checkpoint(crafter_run["phase2"])
    writer = SummaryWriter(str(tmp_path / "tb"))
    path = phase_video(_runtime(crafter_run, tmp_path, writer), payload, world.tokenizer, world.cache)
    writer.close()
    assert path == tmp_path / "phase2_dream.mp4" and path.stat().st_size > 0
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    acc.Reload()
    (tag,) = acc.Tags()["images"]
    assert tag.startswith("eval/phase2/dream/")  # the TensorBoard scheme: eval/<phase>/…
    broken = {**payload, "models": {"dynamics": {}}}
    with caplog.at_level(logging.WARNING):
        assert phase_video(_runtime(crafter_run, tmp_path), broken, world.tokenizer, world.cache) is None
    assert "no dream video (RuntimeError: Error(s) in loading state_dict" in caplog.text
    assert phase_video(types.SimpleNamespace(is_main=False), payload, world.tokenizer, world.cache) is None


def test_dream_cli(s4_run, tmp_path, capsys):
    paths = dream.main(["--checkpoint", str(s4_run["phase2"]), "--out", str(tmp_path), "--episodes", "2",
                        "--horizon", "2", "--scale", "1", "--device", "cpu"])
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    assert str(paths[0]) in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"episodes \['nope'\] are not in the cache"):
        dream.main(["--checkpoint", str(s4_run["phase1"]), "--episode", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"dream: episode ep0: start latent 40 must lie in \[1, "):
        dream.main(["--checkpoint", str(s4_run["phase1"]), "--episode", "ep0", "--start", "40", "--out", str(tmp_path)])
    bad = tmp_path / "x.pt"
    torch.save({"models": {}}, bad)
    with pytest.raises(SystemExit, match=r"dream: checkpoint .*x\.pt holds no world model"):
        dream.main(["--checkpoint", str(bad)])
