"""VPT / BASALT index files and locating contractor recordings on disk.

An index is one JSON object ``{"basedir": url, "relpaths": ["data/<version>/<alias>-<hex>-<date>-<time>.mp4",
…]}``. Relpaths repeat (deduplicated here, first occurrence kept), some session ids have 13 hex
digits, and the VPT README's own example omits ``.mp4``: names are parsed defensively and a name
that does not parse is kept with empty fields. Relpaths are untrusted: one that is absolute or
climbs out with ``..`` is refused (:func:`dreamer.minecraft.paths.safe_join`).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from dreamer.errors import require_dir
from dreamer.minecraft.paths import MinecraftDataError, check_relpath, safe_join

log = logging.getLogger(__name__)

MAX_INDEX_BYTES = 256 * 2**20
_NAME_RE = re.compile(r"^(?P<alias>.+)-(?P<session>[0-9a-f]{12,13})-(?P<date>\d{8})-(?P<time>\d{6})$")


@dataclass(frozen=True)
class VptRecording:
    """One contractor recording: ``<stem>.mp4`` with ``<stem>.jsonl`` next to it."""

    video: Path
    actions: Path
    relpath: str  # as written in the index (or relative to the scanned folder)
    version: str = ""  # e.g. "6.13", or the BASALT task ("find-cave")
    alias: str = ""
    session: str = ""
    date: str = ""
    time: str = ""

    @property
    def stem(self) -> str:
        return self.video.stem


def parse_relpath(relpath: str) -> dict[str, str]:
    """``data/6.13/Player129-f153ac423f61-20210617-171344.mp4`` → version, alias, session, date, time."""
    parts = relpath.replace("\\", "/").split("/")
    stem = parts[-1].removesuffix(".mp4")
    version = parts[-2] if len(parts) > 1 else ""
    m = _NAME_RE.match(stem)
    fields = m.groupdict() if m else {"alias": "", "session": "", "date": "", "time": ""}
    return {"version": version, **fields}


@dataclass
class VptIndex:
    basedir: str
    relpaths: list[str]  # deduplicated, each ending in .mp4
    duplicates: int  # how many repeated relpaths were dropped

    def recordings(self, data_root: str | os.PathLike, source: str | os.PathLike | None = None,
                   only_present: bool = False) -> list[VptRecording]:
        """The relpaths resolved under the local ``data_root``, in index order.

        With ``only_present`` only recordings whose ``.mp4`` or ``.jsonl`` exists are returned, found by
        listing ``data_root`` once (a 70k-entry index with a few downloads stays fast). A recording
        is found at its relpath or, for downloaders that save files flat, by its file name anywhere
        below ``data_root``.
        """
        root = os.path.abspath(data_root)
        if not only_present:
            return [self._recording(rel, safe_join(root, rel, source=source)) for rel in self.relpaths]
        by_rel: dict[str, str] = {}
        by_name: dict[str, str] = {}
        for p in sorted(Path(root).rglob("*")):
            if p.suffix in (".mp4", ".jsonl"):
                rel = p.relative_to(root).with_suffix(".mp4").as_posix()
                by_rel[rel] = rel
                by_name.setdefault(posixpath.basename(rel), rel)
        out = []
        for rel in self.relpaths:
            found = by_rel.get(posixpath.normpath(rel)) or by_name.get(posixpath.basename(rel))
            if found is not None:  # a path listed from disk below root, never one taken from the index
                out.append(self._recording(rel, Path(root, found)))
        return out

    @staticmethod
    def _recording(rel: str, video: Path) -> VptRecording:
        return VptRecording(video, Path(str(video)[:-4] + ".jsonl"), rel, **parse_relpath(rel))


def read_vpt_index(path: str | os.PathLike) -> VptIndex:
    """Read and check an index file; every relpath is validated before anything is returned."""
    path = Path(path)
    if not path.is_file():
        raise MinecraftDataError(path, "<file>", "no such index file")
    if path.stat().st_size > MAX_INDEX_BYTES:
        raise MinecraftDataError(path, "<file>", f"larger than {MAX_INDEX_BYTES} bytes; not a VPT index")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MinecraftDataError(path, "<file>", f"invalid JSON ({e})") from e
    if not isinstance(data, dict):
        raise MinecraftDataError(path, "<file>", f"expected a JSON object, got {type(data).__name__}")
    for key in ("basedir", "relpaths"):
        if key not in data:
            raise MinecraftDataError(path, key, f"missing (file has {sorted(data)})")
    if not isinstance(data["basedir"], str):
        raise MinecraftDataError(path, "basedir", f"expected a string, got {type(data['basedir']).__name__}")
    if not isinstance(data["relpaths"], list):
        raise MinecraftDataError(path, "relpaths", f"expected a list, got {type(data['relpaths']).__name__}")
    seen: dict[str, None] = {}
    for i, rel in enumerate(data["relpaths"]):
        if not isinstance(rel, str):
            raise MinecraftDataError(path, f"relpaths[{i}]", f"expected a string, got {type(rel).__name__}")
        check_relpath(rel, path, f"relpaths[{i}]")  # refuse unsafe paths up front
        seen.setdefault(rel if rel.endswith(".mp4") else rel + ".mp4", None)
    dup = len(data["relpaths"]) - len(seen)
    if dup:
        log.info("%s: dropped %d duplicate relpaths", path, dup)
    return VptIndex(data["basedir"], list(seen), dup)


def find_vpt_recordings(root: str | os.PathLike) -> list[VptRecording]:
    """Every ``*.mp4`` at or below ``root`` (sorted); its actions file is the same path with ``.jsonl``."""
    root = require_dir(root, "VPT data folder")
    out = []
    for video in sorted(root.rglob("*.mp4")):
        rel = video.relative_to(root).as_posix()
        out.append(VptRecording(video, video.with_suffix(".jsonl"), rel, **parse_relpath(rel)))
    return out
