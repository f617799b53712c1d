"""Play the world model in a browser: each key press is one imagined decision.

    python -m dreamer.play --checkpoint checkpoints/crafter_tiny/phase3_final.pt [--port 8000]

Serves a page on 127.0.0.1 (print: its URL; from another machine: ssh -L 8000:localhost:8000 host) that
shows the decoded imagined frame at 4x size, maps keys to the env's actions, advances the world model
one decision per key press (or continuously), restarts from real states of the latent cache, and for
an agent checkpoint shows the agent's suggested action and predicted reward. Latency per decision is
shown on the page (bench/bench_play.py measures it without a browser).
"""

from __future__ import annotations

import argparse
import logging
import sys

from dreamer.viewer.load import load_world, world_arguments
from dreamer.viewer.server import make_server, url_of
from dreamer.viewer.session import PlaySession

log = logging.getLogger("play")


def parse(argv=None) -> argparse.Namespace:
    p = world_arguments(__doc__)
    p.add_argument("--port", type=int, default=8000, help="port on --host (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        server = make_server(None, args.host, args.port)  # bind first: a taken port fails before loading models
        world = load_world(args.checkpoint, args.config, args.set, args.device)
        server.session = PlaySession(world, args.context, args.seed)
    except (OSError, ValueError) as e:
        sys.exit(f"play: {e}")
    url = url_of(server)
    print(f"play: open {url}  (over SSH: ssh -L {server.server_address[1]}:localhost:{server.server_address[1]} <host>)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
