"""dreamer/atomic.py: failed writes name the file and the free space; the leftovers of killed writers
are removed (only the module's own temporary names, only those of writers that are gone)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from dreamer import atomic
from dreamer.atomic import WriteError, atomic_dir, atomic_open, atomic_write_bytes, remove_stale_temps


def dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                       check=True)
    return int(p.stdout)


def test_enospc_names_the_file_and_the_free_space(tmp_path, monkeypatch, full_disk):
    atomic_write_bytes(tmp_path / "a.bin", b"old")
    full_disk(room=2)
    with pytest.raises(WriteError, match=rf"disk full writing {tmp_path / 'a.bin'}: No space left on device "
                                         rf"\(.* MiB free under {tmp_path}\)") as e:
        atomic_write_bytes(tmp_path / "a.bin", b"new")
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    monkeypatch.undo()
    assert (tmp_path / "a.bin").read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]  # nothing left behind


def test_a_failed_folder_write_names_the_folder(tmp_path, monkeypatch):
    """A cache episode written on a full disk: the error names the episode folder, not a bare errno."""
    target = tmp_path / "episodes" / "ep_000001"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(WriteError, match=rf"disk full writing {target}: .* MiB free"), atomic_dir(target) as tmp:
        np.save(tmp / "latents.npy", np.zeros(3))
    assert os.listdir(tmp_path / "episodes") == []
    with pytest.raises(WriteError, match=r"write failed writing .*read-only"), atomic_open(tmp_path / "x"):
        raise OSError(errno.EROFS, "read-only file system")  # any other I/O error is named as well


def test_temporary_names_carry_their_writer(tmp_path):
    with atomic_open(tmp_path / "phase1_step10.pt") as fh:
        (name,) = [p.name for p in tmp_path.iterdir()]
        fh.write(b"x")
    assert name.startswith(f".phase1_step10.pt.{atomic.HOST_TAG}-{os.getpid()}-") and name.endswith(".tmp")
    assert atomic._TMP.fullmatch(name)


def test_leftovers_of_dead_writers_are_removed_and_nothing_else(tmp_path, caplog):
    dead, tag = dead_pid(), atomic.HOST_TAG
    leftovers = [f".phase1_step10.pt.{tag}-{dead}-abcd1234.tmp", f".ep_000001.npz.{tag}-{dead}-a_b_c_d_.tmp"]
    for n in leftovers:
        (tmp_path / n).write_bytes(b"half")
    half_built = tmp_path / f".ep_000000.{tag}-{dead}-zzzz9999.tmp"  # a half-built cache episode folder
    half_built.mkdir()
    (half_built / "latents.npy").write_bytes(b"x")
    live = tmp_path / f".phase1_step20.pt.{tag}-{os.getpid()}-abcd1234.tmp"  # a writer still at work
    other_host = tmp_path / f".phase1_step30.pt.ffffff-{dead}-abcd1234.tmp"
    recent_unnamed = tmp_path / ".phase1_cosmos_final.pt.k2j3h4l5.tmp"  # written before writers were named
    old_unnamed = tmp_path / ".ep_000002.npz.q1w2e3r4.tmp"
    keep = [tmp_path / n for n in ("phase1_step10.pt", ".hidden", "x.tmp", ".notes.tmp", ".a.b.toolongname.tmp")]
    for p in [live, other_host, recent_unnamed, old_unnamed, *keep]:
        p.write_bytes(b"x")
    os.utime(old_unnamed, (time.time() - 2 * atomic.LEGACY_STALE_S,) * 2)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / leftovers[0]).write_bytes(b"x")  # only the folder itself, never below it
    with caplog.at_level("INFO"):
        removed = remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted([*leftovers, half_built.name, old_unnamed.name])
    assert "removed leftovers of interrupted writes" in caplog.text and leftovers[0] in caplog.text
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {live.name, other_host.name, recent_unnamed.name, "sub", *(p.name for p in keep)}
    # the holder of the folder's lock (the run folder's) knows every leftover there is stale
    assert sorted(remove_stale_temps(tmp_path, owned=True)) == sorted([live.name, other_host.name, recent_unnamed.name])
    assert (sub / leftovers[0]).exists()


def test_a_folder_parked_mid_replace_is_put_back(tmp_path):
    """Killed between atomic_dir's two renames: the target is gone and the old folder is parked; the
    cleanup puts it back rather than deleting the only copy."""
    dead = dead_pid()
    parked = tmp_path / f".ep_000003.old-{atomic.HOST_TAG}-{dead}"
    parked.mkdir()
    (parked / "source.json").write_text("{}")
    done = tmp_path / f".ep_000004.old-{dead}"  # the replacement did arrive: the parked copy is obsolete
    done.mkdir()
    (tmp_path / "ep_000004").mkdir()
    remove_stale_temps(tmp_path)
    assert (tmp_path / "ep_000003" / "source.json").is_file() and not parked.exists()
    assert not done.exists() and (tmp_path / "ep_000004").is_dir()
