"""Do the actions change the dream? The play page's own API, driven as a person would drive it.

    python -m diagnostics.play_actions --checkpoint checkpoints/crafter_tiny/phase1_cosmos_final.pt

From each of ``starts`` real starting points (held-out episodes of the latent cache, drawn with ``seed``), four
dreams of ``presses`` decisions each go through ``POST /api/reset`` and ``POST /api/step`` of a play server
(:mod:`dreamer.viewer.server`, on a free port of this machine): ``presses`` × the first action, ``presses`` × the
second (default move_left then move_right), and twice ``presses`` × noop. Each dream's last frame is decoded
from the page's PNG. The figures, mean absolute difference on 0-255 averaged over the starts:

* ``actions_differ``: last frame after the first action's dream against the second's;
* ``noise_differ``: the two noop dreams against each other (what the sampler's noise alone changes);
* ``contrast`` = actions_differ / noise_differ.

The world model answers to its actions when the contrast is at least ``min_contrast`` (1.5: "clearly more"
than noise, the bar this project chose). A world model that ignores the actions scores about 1 (the picture
drifts the same way whatever is pressed).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import threading
import urllib.request
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)
MIN_CONTRAST = 1.5


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _frame(state: dict) -> np.ndarray:
    png = base64.b64decode(state["frame"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def dream_frame(base_url: str, episode: str, start: int, keys: Sequence[str], presses: int) -> np.ndarray:
    """The last frame of ``presses`` decisions holding ``keys`` from latent ``start`` of ``episode``."""
    _post(base_url + "api/reset", {"episode": episode, "start": int(start)})
    state = None
    for _ in range(presses):
        state = _post(base_url + "api/step", {"keys": list(keys)})
    return _frame(state)


def action_contrast(base_url: str, starts: Sequence[tuple[str, int]], first: Sequence[str] = ("a",),
                    second: Sequence[str] = ("d",), noop: Sequence[str] = ("n",), presses: int = 8,
                    min_contrast: float = MIN_CONTRAST) -> dict:
    """The figures of the module docstring through the play server at ``base_url`` (ending in '/')."""
    if not starts:
        raise ValueError("action_contrast: no starting points")
    acts, noise = [], []
    for episode, start in starts:
        a = dream_frame(base_url, episode, start, first, presses)
        b = dream_frame(base_url, episode, start, second, presses)
        n1 = dream_frame(base_url, episode, start, noop, presses)
        n2 = dream_frame(base_url, episode, start, noop, presses)
        acts.append(float(np.abs(a - b).mean()))
        noise.append(float(np.abs(n1 - n2).mean()))
    actions_differ, noise_differ = float(np.mean(acts)), float(np.mean(noise))
    contrast = actions_differ / noise_differ if noise_differ > 0 else float("inf")
    return {"actions_differ": round(actions_differ, 3), "noise_differ": round(noise_differ, 3),
            "contrast": round(contrast, 3), "min_contrast": min_contrast, "ok": bool(contrast >= min_contrast),
            "presses": presses, "starts": len(starts), "first": list(first), "second": list(second)}


def pick_starts(session, count: int, seed: int) -> list[tuple[str, int]]:
    """``count`` (episode, latent step) pairs from the session's held-out start episodes (cycled in a shuffled order),
    each step leaving room for the session's context."""
    rng = np.random.default_rng(seed)
    cache = session.world.cache
    names = [session.starts[i] for i in rng.permutation(len(session.starts))]
    out = []
    for i in range(count):
        name = names[i % len(names)]
        length = len(cache.episode(name))
        lo = min(session.context - 1, length - 1)
        out.append((name, int(rng.integers(lo, max(lo + 1, length - 1)))))
    return out


@contextmanager
def serving(session):
    """A play server for ``session`` on a free local port, in a thread; yields its URL."""
    from dreamer.viewer.server import make_server, url_of

    server = make_server(session, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield url_of(server)
    finally:
        server.shutdown()
        server.server_close()


def measure(checkpoint: str, configs: Sequence[str] = (), overrides: Sequence[str] = (), starts: int = 8,
            presses: int = 8, seed: int = 0, device: str = "cpu", context: int = 2, first: Sequence[str] = ("a",),
            second: Sequence[str] = ("d",)) -> dict:
    """Load ``checkpoint`` as ``python -m dreamer.play`` does, serve it on a free local port and measure."""
    from dreamer.viewer.load import load_world
    from dreamer.viewer.session import PlaySession

    session = PlaySession(load_world(checkpoint, configs, overrides, device), context, seed)
    with serving(session) as url:
        out = action_contrast(url, pick_starts(session, starts, seed), first, second, presses=presses)
    out["checkpoint"] = str(checkpoint)
    return out


def line(result: dict) -> str:
    """One plain sentence for the figures of :func:`action_contrast`."""
    a, b = "+".join(result["first"]), "+".join(result["second"])
    s = (f"play page: {result['presses']} x [{a}] and {result['presses']} x [{b}] from the same start differ by "
         f"{result['actions_differ']:.2f} (0-255), two {result['presses']} x noop dreams by {result['noise_differ']:.2f}: "
         f"contrast {result['contrast']:.2f}")
    return s + (" (the dream follows the actions)" if result["ok"] else
                f": WARNING, below {result['min_contrast']}: the picture changes about as much whatever is pressed")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--starts", type=int, default=8)
    p.add_argument("--presses", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--first", default="a", help="key held in the first dream (Crafter: a = move_left)")
    p.add_argument("--second", default="d", help="key held in the second dream (Crafter: d = move_right)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON as well")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        out = measure(args.checkpoint, args.config, args.set, args.starts, args.presses, args.seed, args.device,
                      first=(args.first,), second=(args.second,))
    except (OSError, ValueError) as e:
        raise SystemExit(f"play_actions: {e}") from e
    if args.json:
        print(json.dumps(out, indent=1))
    print(line(out))
    return 0


if __name__ == "__main__":
    from dreamer.errors import run_cli

    raise SystemExit(run_cli(main))
