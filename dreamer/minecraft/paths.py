"""Errors and path safety for Minecraft data files.

Paths read from data files (VPT index ``relpaths``, names from ``metadata.json``) are untrusted:
:func:`safe_join` refuses absolute paths and any ``..`` component, so an index cannot make the
converter read outside its data root, and :func:`safe_filename` turns an untrusted name into one
flat file name, so an output can never land outside the output folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dreamer.data.episode import EpisodeError

_SEPARATORS = re.compile(r"[/\\]")


class MinecraftDataError(EpisodeError):
    """A malformed or unsafe Minecraft recording; the message names the file and the field."""


def check_relpath(relpath: str, where: str | os.PathLike, field_name: str = "relpath") -> None:
    """Refuse anything but a plain relative path: absolute paths, drive letters, '..' components, NUL."""
    if not isinstance(relpath, str) or not relpath.strip():
        raise MinecraftDataError(where, field_name, f"expected a non-empty relative path, got {relpath!r}")
    if "\x00" in relpath:
        raise MinecraftDataError(where, field_name, f"path {relpath!r} contains a NUL byte")
    if relpath[0] in "/\\" or relpath[1:2] == ":":  # POSIX or Windows root, or a drive letter
        raise MinecraftDataError(where, field_name, f"absolute path {relpath!r} refused: paths in data files "
                                 "must be relative to the data root")
    if ".." in _SEPARATORS.split(relpath):
        raise MinecraftDataError(where, field_name, f"path {relpath!r} refused: it climbs out of the data root "
                                 "with '..'")


def safe_join(root: str | os.PathLike, relpath: str, *, source: str | os.PathLike | None = None,
              field_name: str = "relpath") -> Path:
    """``root / relpath`` if ``relpath`` is a plain relative path inside ``root``, else an error.

    ``source`` is the file the path was read from (named in the error message).
    """
    where = source if source is not None else root
    check_relpath(relpath, where, field_name)
    root_abs = os.path.abspath(root)
    joined = os.path.normpath(os.path.join(root_abs, relpath))
    if not joined.startswith(root_abs.rstrip(os.sep) + os.sep):  # belt and braces after the checks above
        raise MinecraftDataError(where, field_name, f"path {relpath!r} resolves outside the data root {root}")
    return Path(joined)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(*parts: str, max_len: int = 200) -> str:
    """Join untrusted name parts into one flat, harmless file-name stem (no separators, no '..')."""
    cleaned = [_UNSAFE.sub("_", str(p)).strip("._") for p in parts]
    stem = "__".join(c for c in cleaned if c) or "episode"
    return stem[:max_len]
