"""User errors: what a user can get wrong, told in one line with an exit code of its own (docs/design.md §9).

Every error a command line can cause by its input (a config key, a path, a refused file, a busy run folder,
damaged data, a diverged run) is a :class:`UserError`; the error classes of the modules that raise them
inherit from it as well as from the built-in class they always were (``ConfigError`` is still a
``ValueError``). :func:`run_cli` runs a command's ``main``: a user error prints ``error: <message>`` on one
line and exits with its code; anything else is a bug and keeps its traceback. ``--debug`` on the command
line (or ``DREAMER_DEBUG=1``) shows the traceback of a user error too.

Exit codes: 1 a bug (Python's), 2 the config or command line (argparse's too), 3 a path that is missing or
the wrong kind, 4 input data refused (episodes, checkpoints, the latent cache), 5 the run folder (busy, not
writable, disk full), 6 training stopped (non-finite losses or held-out figures).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

CONFIG, PATH, DATA, RUN_FOLDER, DIVERGED = 2, 3, 4, 5, 6


class UserError(Exception):
    """A mistake in what the user gave, not a bug; ``exit_code`` says which kind."""

    exit_code = DATA


class ConfigError(UserError, ValueError):
    """A bad config file, key or value (or one the data or the machine cannot serve); the message names it."""

    exit_code = CONFIG


class PathKindError(UserError, FileNotFoundError):
    """A path that does not exist, or is a folder where a file is needed (or the other way round)."""

    exit_code = PATH


def path_kind(path: Path) -> str:
    """'a folder', 'a file', 'a broken link' or 'missing': what is at ``path``."""
    if path.is_dir():
        return "a folder"
    if path.is_file():
        return "a file"
    if path.is_symlink():
        return "a broken link"
    return "missing" if not path.exists() else "neither a file nor a folder"


def require_file(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    """``path`` if it is a file, else :class:`PathKindError` saying what it is instead (``what``: 'checkpoint')."""
    path = Path(path)
    if path.is_file():
        return path
    kind = path_kind(path)
    if kind == "a folder":
        inside = sorted(p.name for p in path.iterdir() if p.suffix in {".pt", ".npz", ".yaml", ".json"})[:6]
        msg = f"{what} {path} is a folder, not a file" + (f" (it holds {', '.join(inside)})" if inside else "")
    else:
        msg = f"{what} {path} does not exist" if kind == "missing" else f"{what} {path} is {kind}, not a file"
    raise PathKindError(msg + (f"; {hint}" if hint else ""))


def require_dir(path: str | os.PathLike, what: str, hint: str = "", create: bool = False) -> Path:
    """``path`` if it is a folder (made when ``create``), else :class:`PathKindError` saying what it is."""
    path = Path(path)
    if create and not path.exists() and not path.is_symlink():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # a file on the way down
            parent = next(p for p in path.parents if p.exists())
            raise PathKindError(f"{what} {path} cannot be made: {parent} is {path_kind(parent)}, not a folder"
                                + (f"; {hint}" if hint else "")) from None
    if path.is_dir():
        return path
    kind = path_kind(path)
    msg = f"{what} {path} does not exist" if kind == "missing" else f"{what} {path} is {kind}, not a folder"
    raise PathKindError(msg + (f"; {hint}" if hint else ""))


def run_cli(main: Callable, argv: list[str] | None = None):
    """Run a command's ``main(argv)``; a :class:`UserError` becomes one line on stderr and its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("DREAMER_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        return main(args)
    except UserError as e:
        if debug:
            raise
        line = " ".join(part.strip() for part in str(e).splitlines() if part.strip()) or type(e).__name__
        print(f"error: {line}  (exit {e.exit_code}; --debug shows the traceback)", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
