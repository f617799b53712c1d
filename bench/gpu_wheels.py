"""Download the wheels that `make gpu-check` installs on a GPU machine without network (`make gpu-wheels`).

    python bench/gpu_wheels.py [--dest wheels] [--python-version 3.12] [--keep-all]

Run it where PyPI is reachable. It fetches the project's dependencies (pyproject.toml) other than torch, plus
pytest, with everything they need, as wheels for the GPU machine's Python (default 3.12 on x86-64 Linux, the
lent H200 machines' /opt/torch/.venv Python 3.12 with torch 2.11). A dependency published only as a source
archive (crafter) is built here into a pure-Python wheel. The large wheels of packages that every CUDA PyTorch
image holds (numpy, pillow, tensorboard and its grpcio, protobuf) are left out unless --keep-all, so the folder
stays about 50 MB (35 MB of it is av's FFmpeg build). The folder is replaced, and gpu_wheels.json in it says what
it holds and for which Python. torch and its CUDA libraries are never downloaded: the GPU machine's own are used.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Manylinux tags the wheels may carry; pip matches each glibc version exactly, so the usual ones are listed.
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux_2_5_x86_64",
             "manylinux1_x86_64"]
# Held by every CUDA PyTorch image we know (the lent H200 image among them); tens of MB together.
LEFT_OUT = {"numpy", "pillow", "tensorboard", "tensorboard-data-server", "grpcio", "protobuf"}
NO_WHEEL = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: Path) -> str:
    return canonical(path.name.split("-")[0])


def requirements() -> list[str]:
    """The project's runtime dependencies but torch, and the test runner (pytest from the dev extra)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [d for d in project["dependencies"] if canonical(re.split(r"[<>=!~;\[ ]", d)[0]) != "torch"]
    deps += [d for d in project["optional-dependencies"]["dev"] if canonical(re.split(r"[<>=!~;\[ ]", d)[0]) == "pytest"]
    return deps


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dest", default=str(ROOT / "wheels"))
    p.add_argument("--python-version", default="3.12", help="the GPU machine's Python, major.minor")
    p.add_argument("--keep-all", action="store_true", help=f"also keep {sorted(LEFT_OUT)}")
    args = p.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    reqs = requirements()
    target = ["--only-binary=:all:", "--python-version", args.python_version, "--implementation", "cp",
              *(a for plat in PLATFORMS for a in ("--platform", plat))]
    built: list[str] = []
    for _ in range(5):  # each round builds the wheel of one source-only dependency, then resolves again
        out = pip("download", "--disable-pip-version-check", "-d", str(dest), "--find-links", str(dest), *target, *reqs)
        if out.returncode == 0:
            break
        missing = NO_WHEEL.search(out.stderr)
        if not missing or canonical(missing.group(1)) in built:
            sys.exit(f"gpu_wheels: pip download failed:\n{out.stderr[-3000:]}")
        name = missing.group(1)
        print(f"gpu_wheels: {name} has no wheel for Python {args.python_version}: building a pure-Python one here")
        req = next((r for r in reqs if canonical(re.split(r"[<>=!~;\[ ]", r)[0]) == canonical(name)), name)
        w = pip("wheel", "--disable-pip-version-check", "--no-deps", "-w", str(dest), req)
        made = [f for f in dest.glob("*.whl") if wheel_name(f) == canonical(name)]
        if w.returncode != 0 or not made or not all(f.name.endswith("-none-any.whl") for f in made):
            sys.exit(f"gpu_wheels: could not build a pure-Python wheel of {name} (a compiled package cannot be built "
                     f"for another Python here):\n{w.stderr[-3000:]}")
        built.append(canonical(name))
    else:
        sys.exit("gpu_wheels: gave up after building 5 wheels")
    left_out = []
    if not args.keep_all:
        for f in sorted(dest.glob("*.whl")):
            if wheel_name(f) in LEFT_OUT:
                left_out.append(f.name)
                f.unlink()
    wheels = sorted(f.name for f in dest.glob("*.whl"))
    mb = sum(f.stat().st_size for f in dest.glob("*.whl")) / 1e6
    manifest = {"python_version": args.python_version, "platforms": PLATFORMS, "requirements": reqs, "wheels": wheels,
                "built_here": built, "left_out": left_out, "total_mb": round(mb, 1)}
    (dest / "gpu_wheels.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"gpu_wheels: {len(wheels)} wheels, {mb:.1f} MB in {dest} for Python {args.python_version}"
          + (f"; left out (expected on the GPU machine): {', '.join(sorted({wheel_name(Path(n)) for n in left_out}))}"
             if left_out else ""))


if __name__ == "__main__":
    main()
