"""Reading YAML presets into typed dataclass configs (the generic loader; the run's own config is
:class:`dreamer.config.Config`).

- A preset may start with ``include: [other.yaml, ...]`` (paths relative to it); later files and
  keys win. Several ``--config`` files stack in the order given.
- ``--set data.clip_len=32`` overrides one key; the value is parsed as YAML (``null``, lists, …).
- An unknown key is an error that names it and lists the valid keys at that level.
- The resolved config is saved in the run directory (``config_<phase>.yaml``) by every phase.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from dreamer.atomic import atomic_write_bytes
from dreamer.errors import ConfigError


def _merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a preset, resolving its ``include`` list first."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: include cycle through {[str(p) for p in _seen]}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    merged: dict = {}
    includes = data.pop("include", []) or []
    for inc in [includes] if isinstance(includes, str) else includes:
        merged = _merge(merged, read_yaml(path.parent / inc, _seen + (path,)))
    return _merge(merged, data)


def apply_override(data: dict, assignment: str) -> dict:
    """Apply one ``a.b.c=value`` override to a nested dict (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got '{assignment}'")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: cannot parse value '{raw}': {e}") from e
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{p}' is not a section")
    node[parts[-1]] = value
    return data


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"config key '{key}': bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"config key '{key}': expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise ConfigError listing valid keys."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"section '{prefix}'" if prefix else "the top level"
        close = {k: difflib.get_close_matches(k, names, n=3, cutoff=0.6) for k in unknown}
        hint = "; ".join(f"did you mean {' or '.join(repr(m) for m in c)} for {k!r}?" for k, c in close.items() if c)
        err = ConfigError(f"unknown config key(s) {unknown} in {where}" + (f"; {hint}" if hint else "")
                          + f"; valid keys: {names}")
        err.keys = [f"{prefix}.{k}" if prefix else k for k in unknown]
        raise err
    kwargs = {}
    for k, v in data.items():
        full = f"{prefix}.{k}" if prefix else k
        try:
            kwargs[k] = _coerce(v, hints[k], full)
        except ConfigError as e:  # the key travels with the error: load_config names where it was set
            if not getattr(e, "keys", None):
                e.keys = [full]
            raise
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config section '{prefix or '<root>'}': {e}") from e


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> Path:
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    return atomic_write_bytes(Path(path), text.encode())


def load_config(cls: type, paths: list[str] | None = None, overrides: list[str] | None = None,
                moved: dict[str, str] | None = None) -> Any:
    """``cls`` from the presets ``paths`` (stacked) and the ``overrides``; an unknown key's error also names
    where it came from (the preset file, or the --set). ``moved`` maps keys that moved ({old: new}, dotted):
    an old key is refused naming its new name (:func:`refuse_moved`)."""
    data: dict = {}
    sources: list[tuple[str, dict]] = []
    for p in paths or []:
        one = read_yaml(p)
        sources.append((str(p), one))
        data = _merge(data, copy.deepcopy(one))  # --set must not edit the record of what the file set
    for o in overrides or []:
        data = apply_override(data, o)
        sources.append((f"--set {o}", apply_override({}, o)))
    refuse_moved(data, moved or {}, sources)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        keys = getattr(e, "keys", None)
        if not keys:
            raise
        found = sorted({src for k in keys for src, d in sources if _has_key(d, k.split("."))})
        if not found:
            raise
        raise ConfigError(f"{e} (set in {', '.join(found)})") from None


def refuse_moved(data: dict, moved: dict[str, str], sources: list[tuple[str, dict]] = ()) -> None:
    """A ConfigError naming each key of ``data`` that is an old name in ``moved`` ({old: new}), its new name and
    where it was set (``sources``: (label, the part of the config it set))."""
    found = [old for old in moved if _has_key(data, old.split("."))]
    if not found:
        return
    parts = []
    for old in found:
        where = sorted({src for src, d in sources if _has_key(d, old.split("."))})
        parts.append(f"'{old}' is now '{moved[old]}'" + (f" (set in {', '.join(where)})" if where else ""))
    raise ConfigError(f"config key(s) moved: {'; '.join(parts)}; rename them")


def _has_key(data: dict, parts: list[str]) -> bool:
    for p in parts:
        if not isinstance(data, dict) or p not in data:
            return False
        data = data[p]
    return True


def reference(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) of every leaf of the config dataclass ``cls``, in declaration order; the
    meaning is the comment on the field's line or on the lines just above it in the source."""
    rows = []
    hints = typing.get_type_hints(cls)
    notes = _field_comments(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += reference(tp, key)
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        rows.append((key, _type_name(tp), yaml.safe_dump(default, default_flow_style=True).strip().removesuffix(
            "\n...").removesuffix("..."), notes.get(f.name, "")))
    return rows


def _type_name(tp) -> str:
    name = getattr(tp, "__name__", None) if typing.get_origin(tp) is None else None
    return name or str(tp).replace("typing.", "")


def _field_comments(cls: type) -> dict[str, str]:
    """{field: comment} from the source of ``cls`` and its bases (inline ``# …``, else the ``#`` lines above)."""
    import inspect
    import re

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        last = None  # the field whose inline comment a '#   …' line (aligned, two or more spaces) continues
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#"):
                if last and re.match(r"#\s{2,}", stripped):
                    out[last] += " " + stripped.lstrip("#").strip()
                else:
                    above.append(stripped.lstrip("#").strip())
                    last = None
                continue
            m = re.match(r"    (\w+)\s*:\s*[^=#]+(?:=[^#]*)?(?:#\s*(.*))?$", line)
            last = None
            if m:  # a field: its inline comment, else the comment lines just above it
                out[m.group(1)] = (m.group(2) or " ".join(above)).strip()
                last = m.group(1) if m.group(2) else None
            above = []
    return out
