"""User errors in one line (issue 29): every mistake a user can make at a command line prints ``error: …`` naming
the key, file or folder, and exits with the code of its kind; a bug keeps its traceback, and ``--debug`` shows
the traceback of a user error too. Paths of the wrong kind say what they are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamer.atomic import WriteError
from dreamer.config import ConfigError
from dreamer.data.cache import CacheMismatchError, DamagedCacheError
from dreamer.data.episode import EpisodeError, load_episode, save_episode
from dreamer.data.synthetic import make_episode
from dreamer.errors import PathKindError, UserError, require_dir, require_file, run_cli
from dreamer.training.checkpoint import DamagedCheckpointError, InputMismatchError
from dreamer.training.lock import RunFolderBusyError
from dreamer.training.optim import NonFiniteError
from dreamer.training.runtime import RunFolderError, check_run_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("error,code", [
    (ConfigError("unknown config key(s) ['stepz'] in section 'phase1'"), 2),
    (PathKindError("checkpoint /x is a folder, not a file"), 3),
    (EpisodeError("/e/ep_1.npz", "frames", "expected uint8"), 4),
    (DamagedCheckpointError("checkpoint /x.pt is damaged: empty"), 4),
    (InputMismatchError("run folder was started from phase1 checkpoint /a"), 4),
    (CacheMismatchError("latent cache /c was built with tokenizer …"), 4),
    (DamagedCacheError("latent cache /c: 1 damaged entry"), 4),
    (RunFolderBusyError("run folder /r is busy: phase1 pid 12"), 5),
    (RunFolderError("only 3 MiB free under /r"), 5),
    (WriteError("writing /r/x.pt failed: no space left"), 5),
    (NonFiniteError("5 non-finite steps in a row"), 6),
])
def test_a_user_error_is_one_line_and_its_exit_code(error, code, capsys):
    def main(argv):
        assert argv == ["--config", "c.yaml"]  # --debug is run_cli's, not the command's
        raise error

    with pytest.raises(SystemExit) as e:
        run_cli(main, ["--config", "c.yaml"])
    err = capsys.readouterr().err
    assert e.value.code == code and isinstance(error, UserError)
    assert err.count("\n") == 1 and err.startswith(f"error: {error}") and "Traceback" not in err
    with pytest.raises(type(error)):  # --debug: the traceback, as a bug has
        run_cli(main, ["--config", "c.yaml", "--debug"])


def test_a_bug_keeps_its_traceback():
    def main(argv):
        return {}["missing"]

    with pytest.raises(KeyError):
        run_cli(main, [])
    assert run_cli(lambda argv: 7, []) == 7  # a main's result is handed back


def test_paths_of_the_wrong_kind_say_what_they_are(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "phase1_cosmos_final.pt").write_bytes(b"x")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(PathKindError, match=r"is a folder, not a file \(it holds phase1_cosmos_final.pt\)"):
        require_file(tmp_path / "run", "checkpoint")
    with pytest.raises(PathKindError, match="file.txt is a file, not a folder"):
        require_dir(tmp_path / "file.txt", "data.cache_dir")
    with pytest.raises(PathKindError, match="cannot be made: .*file.txt is a file, not a folder"):
        require_dir(tmp_path / "file.txt" / "sub", "run directory", create=True)
    with pytest.raises(PathKindError, match="nope.pt does not exist"):
        require_file(tmp_path / "nope.pt", "checkpoint")
    assert require_dir(tmp_path / "new" / "dir", "x", create=True).is_dir()
    with pytest.raises(EpisodeError, match="is a folder, not an episode file"):
        load_episode(tmp_path / "run")


@pytest.mark.parametrize("content,says", [(b"hello, not an episode\n", "this is a text file"),
                                          (b"", "this is empty"), (b"\x93NUMPY\x01\x00", "starts with")])
def test_a_file_that_is_not_an_npz_is_named_with_its_real_cause(tmp_path, content, says):
    (tmp_path / "ep_x.npz").write_bytes(content)
    with pytest.raises(EpisodeError, match=f"ep_x.npz: field '<file>': not an episode: .*{says}"):
        load_episode(tmp_path / "ep_x.npz")


def test_the_free_space_floor_is_a_setting_derived_from_the_checkpoints(tmp_path):
    check_run_dir(tmp_path / "run")  # nothing there yet: 16 MiB
    with pytest.raises(RunFolderError, match=r"need at least 10000000000 MiB .*min_free_mb"):
        check_run_dir(tmp_path / "run", 10**10)
    from dreamer.training.runtime import min_free_mb

    (tmp_path / "run" / "phase1_step2.pt").write_bytes(b"\0" * (10 * 2**20))
    assert min_free_mb(tmp_path / "run") == 30 and min_free_mb(tmp_path / "run", 5) == 5
    assert min_free_mb(tmp_path / "none") == 16


@pytest.mark.slow
def test_the_phase_scripts_print_one_line_for_user_errors(tmp_path):
    """The issue's cases through the real scripts: an unknown --set key, a wrong type, a missing tokenizer folder,
    a folder as --checkpoint, a text file named like an episode. No traceback, the culprit named, the exit code."""
    for i in range(2):
        save_episode(tmp_path / "eps" / f"ep_{i}.npz", make_episode(T=12, seed=i))
    base = ["--config", str(ROOT / "configs" / "test.yaml"), "--set", f"checkpoint_root={tmp_path / 'ckpt'}",
            "--set", f"data.episodes_dir={tmp_path / 'eps'}", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    (tmp_path / "ckpt" / "t").mkdir(parents=True)
    cases = [
        (["train_phase1_cosmos.py", *base, "--set", "phase1.stepz=3"], 2, "unknown config key(s) ['stepz']"),
        (["train_phase1_cosmos.py", *base, "--set", "phase1.steps=abc"], 2, "'phase1.steps': expected int"),
        (["train_phase1_cosmos.py", *base, "--set", f"tokenizer.pretrained={tmp_path / 'tok'}"], 3,
         f"tokenizer.pretrained={tmp_path / 'tok'}: no such folder"),
        (["train_phase2.py", *base, "--checkpoint", str(tmp_path / "ckpt" / "t")], 3,
         f"checkpoint {tmp_path / 'ckpt' / 't'} is a folder, not a file"),
        (["train_phase1_cosmos.py", *base, "--set", f"data.cache_dir={tmp_path / 'eps' / 'ep_0.npz'}"], 3,
         "is a file, not a folder"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    for cmd, code, says in cases:
        out = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                             check=False)
        last = out.stderr.strip().splitlines()[-1]
        assert out.returncode == code and "Traceback" not in out.stderr, (cmd[-1], out.stderr[-2000:])
        assert last.startswith("error: ") and says in last, (cmd[-1], last)
    (tmp_path / "eps" / "ep_2.npz").write_text("not an episode\n")
    out = subprocess.run([sys.executable, "train_phase1_cosmos.py", *base], cwd=ROOT, env=env, capture_output=True,
                         check=False, text=True, timeout=300)
    assert out.returncode == 4 and "Traceback" not in out.stderr
    assert f"{tmp_path / 'eps' / 'ep_2.npz'}: field '<file>': not an episode" in out.stderr.strip().splitlines()[-1]


def test_a_run_folder_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    """A read-only run folder (root ignores chmod, so the write probe is made to fail as a read-only mount does)."""
    import errno
    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(RunFolderError, match=r"run directory .*run is not writable .*Read-only file system") as e:
        check_run_dir(tmp_path / "run")
    assert e.value.exit_code == 5
