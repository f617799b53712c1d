"""``python -m diagnostics --phase N --config ... [--checkpoint ...]``: see diagnostics.cli."""

import sys

from diagnostics.cli import main

if __name__ == "__main__":
    from dreamer.errors import run_cli

    sys.exit(run_cli(main))
