"""Install the project's dependencies that this Python lacks from a folder of wheels, offline, into an overlay
folder that leaves the interpreter's own packages (its CUDA torch above all) untouched (`make gpu-check`).

    python bench/gpu_env.py --wheels wheels --target .gpu-site      # then PYTHONPATH=.gpu-site:. python ...

Starting from the requirements of pyproject.toml (torch excepted) and pytest, every requirement this interpreter
already satisfies is kept as it is; any other is taken from the folder (the newest wheel that fits this
interpreter and the requirement), and so are its own requirements, recursively. The chosen wheels are installed with
``pip install --no-deps --no-index --target``. The folder comes from ``make gpu-wheels`` (bench/gpu_wheels.py).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ModuleNotFoundError:  # pip carries its own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]


class MissingWheel(RuntimeError):
    pass


def requirements() -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_wheels import requirements as project_requirements

    return project_requirements()


def installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def wheel_requires(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode("utf-8", "replace")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def index(wheels: Path) -> dict[str, list[tuple]]:
    """Wheels of the folder that this interpreter can install, by canonical name, newest first."""
    tags = set(sys_tags())
    found: dict[str, list[tuple]] = {}
    for f in wheels.glob("*.whl"):
        name, version, _, wtags = parse_wheel_filename(f.name)
        if tags & set(wtags):
            found.setdefault(canonicalize_name(name), []).append((version, f))
    return {k: sorted(v, key=lambda x: x[0], reverse=True) for k, v in found.items()}


def resolve(reqs: list[str], wheels: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """(wheels to install by name, requirements already satisfied by this interpreter: name -> version)."""
    avail = index(wheels)
    chosen: dict[str, Path] = {}
    kept: dict[str, str] = {}
    todo = [(r, "pyproject.toml") for r in reqs]
    while todo:
        text, why = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in chosen:
            version = parse_wheel_filename(chosen[name].name)[1]
            if not req.specifier.contains(version, prereleases=True):
                raise MissingWheel(f"{why} needs {text}, but {chosen[name].name} was chosen for another requirement")
            continue
        have = installed_version(name)
        if have is not None and req.specifier.contains(have, prereleases=True):
            kept[name] = have
            continue
        fits = [f for v, f in avail.get(name, []) if req.specifier.contains(v, prereleases=True)]
        if not fits:
            found = ", ".join(f.name for _, f in avail.get(name, [])) or "none"
            raise MissingWheel(
                f"this Python ({sys.executable}, {sys.version.split()[0]}) "
                + (f"has {name} {have}, which does not satisfy" if have else "lacks")
                + f" {text} (needed by {why}), and {wheels} holds no wheel for it that fits (wheels of {name}: {found})")
        chosen[name] = fits[0]
        todo += [(r, fits[0].name) for r in wheel_requires(fits[0])]
    return chosen, kept


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wheels", default=str(ROOT / "wheels"))
    p.add_argument("--target", default=str(ROOT / ".gpu-site"))
    args = p.parse_args(argv)
    wheels, target = Path(args.wheels), Path(args.target)
    if target.exists():
        shutil.rmtree(target)
    manifest = wheels / "gpu_wheels.json"
    built_for = json.loads(manifest.read_text())["python_version"] if manifest.is_file() else None
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        chosen, kept = resolve(requirements(), wheels)
    except MissingWheel as e:
        hint = (f"{wheels} does not exist: run `make gpu-wheels` where PyPI is reachable and bring the folder along"
                if not wheels.is_dir() else
                f"rerun `make gpu-wheels GPU_PYVER={mine}` where PyPI is reachable"
                + (f" (the folder was made for Python {built_for})" if built_for and built_for != mine else "")
                + ", with GPU_WHEELS_ARGS=--keep-all if this Python also lacks numpy, pillow or tensorboard")
        sys.exit(f"gpu_env: {e}\ngpu_env: {hint}")
    print(f"gpu_env: {len(kept)} requirements already met by {sys.executable}"
          f" ({', '.join(f'{k} {v}' for k, v in sorted(kept.items()))})")
    if chosen:
        out = subprocess.run([sys.executable, "-m", "pip", "install", "--isolated", "--disable-pip-version-check",
                              "--no-index", "--no-deps", "--quiet", "--target", str(target),
                              *map(str, chosen.values())], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"gpu_env: pip install --target {target} failed:\n{out.stderr[-3000:]}")
    else:
        target.mkdir(parents=True)
    (target / "gpu_env.json").write_text(json.dumps({"installed": sorted(f.name for f in chosen.values()),
                                                     "kept": kept}, indent=1) + "\n")
    print(f"gpu_env: installed {len(chosen)} wheels into {target}: {', '.join(sorted(chosen)) or 'none needed'}")


if __name__ == "__main__":
    main()
