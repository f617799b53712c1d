"""The one JSON schema of a real-env evaluation (docs/design.md §6): ``phase2_eval.json``, ``phase3_eval.json`` and
``python -m dreamer.evaluate``'s ``<checkpoint>.evaluate.json``::

    {"schema": 1, "phase": 0-3, "seeds": [int, …], "max_steps": int, "context": int, "greedy": bool,
     "seconds": float, "summaries": {policy: summary}, "episodes": {policy: [result, …]}, …extras}

``summaries`` and ``episodes`` name the same policies in the same order (the order they were played); every
policy played one episode per seed, in the order of ``seeds``. A summary is :func:`dreamer.envs.evaluation.summarise`'s,
a result :func:`dreamer.envs.runner.episode_result`'s. ``phase`` is the phase of the agent judged. A field that was
not known is ``null``: files of older runs, converted by :func:`read_eval_record`, may lack some.

A policy has one name in every phase and file (:data:`POLICIES`): ``random`` (uniform), ``frame_blind`` (the
data's action frequencies, sampled without looking at a frame), ``bc`` (the phase-2 agent), ``pmpo`` (the phase-3
agent) and ``agent`` (a checkpoint of unknown phase). Older files named them ``data_frequency``, ``phase2_bc``,
``phase3`` (:data:`OLD_NAMES`) and phase 2 kept its summaries at the top level; :func:`read_eval_record` reads
them as this schema. Named extras (:data:`EXTRAS`): ``exploitation`` (phase 3, the imagined-against-real check,
per policy) and ``checkpoint`` (``dreamer.evaluate``, the checkpoint judged).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from dreamer.errors import UserError

SCHEMA = 1
POLICIES = ("random", "frame_blind", "bc", "pmpo", "agent")
OLD_NAMES = {"data_frequency": "frame_blind", "phase2_bc": "bc", "phase3": "pmpo"}
FIELDS = ("schema", "phase", "seeds", "max_steps", "context", "greedy", "seconds", "summaries", "episodes")
EXTRAS = ("exploitation", "checkpoint")
SUMMARY_KEYS = ("episodes", "return_mean", "return_std", "return_ci95", "length_mean", "length_std")
RESULT_KEYS = ("seed", "return", "length")


class EvalRecordError(UserError, ValueError):
    """An evaluation file or record that does not follow the schema; the message names the file and the field."""


def eval_record(phase: int, seeds, max_steps: int | None, context: int | None, greedy: bool, seconds: float | None,
                episodes: dict[str, list[dict]], **extras) -> dict:
    """The evaluation record of ``episodes`` ({policy: per-episode results}, in the order played), summarised
    per policy; checked (:func:`check_eval_record`) before it is returned."""
    from dreamer.envs.evaluation import summarise

    record = {"schema": SCHEMA, "phase": int(phase), "seeds": [int(s) for s in seeds], "max_steps": max_steps,
              "context": context, "greedy": bool(greedy), "seconds": seconds,
              "summaries": {name: summarise(results) for name, results in episodes.items()},
              "episodes": dict(episodes), **extras}
    return check_eval_record(record, "evaluation record")


def _fail(where, field: str, what: str):
    raise EvalRecordError(f"{where}: field '{field}' {what}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_eval_record(record, where: str | Path = "evaluation record") -> dict:
    """``record`` if it follows the schema, else :class:`EvalRecordError` naming ``where`` and the field."""
    if not isinstance(record, dict):
        raise EvalRecordError(f"{where}: an evaluation record is a JSON object, got {type(record).__name__}")
    missing = [f for f in FIELDS if f not in record]
    if missing:
        _fail(where, missing[0], f"is missing (fields: {', '.join(FIELDS)})")
    unknown = sorted(set(record) - set(FIELDS) - set(EXTRAS))
    if unknown:
        _fail(where, unknown[0], f"is not part of schema {SCHEMA} (extras: {', '.join(EXTRAS)})")
    if record["schema"] != SCHEMA:
        _fail(where, "schema", f"is {record['schema']!r}, expected {SCHEMA}")
    if not _is_int(record["phase"]) or not 0 <= record["phase"] <= 3:
        _fail(where, "phase", f"is {record['phase']!r}, expected a phase 0-3")
    seeds = record["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) for s in seeds):
        _fail(where, "seeds", f"is {seeds!r}, expected a non-empty list of integers")
    for field, ok, want in (("max_steps", _is_int, "an integer"), ("context", _is_int, "an integer"),
                            ("greedy", lambda x: isinstance(x, bool), "true or false"),
                            ("seconds", lambda x: _is_num(x) and x >= 0, "a number >= 0")):
        if record[field] is not None and not ok(record[field]):
            _fail(where, field, f"is {record[field]!r}, expected {want} or null")
    summaries, episodes = record["summaries"], record["episodes"]
    for field, value in (("summaries", summaries), ("episodes", episodes)):
        if not isinstance(value, dict) or not value:
            _fail(where, field, "must map policy names to their figures")
        bad = [p for p in value if p not in POLICIES]
        if bad:
            _fail(where, f"{field}.{bad[0]}", f"is not a policy name ({', '.join(POLICIES)})")
    if list(summaries) != list(episodes):
        _fail(where, "episodes", f"names {list(episodes)}, the summaries {list(summaries)}")
    for policy, s in summaries.items():
        for key in SUMMARY_KEYS:
            if not _is_num(s.get(key) if isinstance(s, dict) else None):
                _fail(where, f"summaries.{policy}.{key}", "is missing or not a finite number")
        if s["episodes"] != len(seeds):
            _fail(where, f"summaries.{policy}.episodes", f"is {s['episodes']}, one per seed is {len(seeds)}")
    for policy, results in episodes.items():
        if not isinstance(results, list) or len(results) != len(seeds):
            _fail(where, f"episodes.{policy}", f"must list one result per seed ({len(seeds)})")
        for i, r in enumerate(results):
            for key in RESULT_KEYS:
                if not _is_num(r.get(key) if isinstance(r, dict) else None):
                    _fail(where, f"episodes.{policy}[{i}].{key}", "is missing or not a finite number")
        if [r["seed"] for r in results] != seeds:
            _fail(where, f"episodes.{policy}", "does not play the seeds in the order of 'seeds'")
    if "exploitation" in record:
        ex = record["exploitation"]
        if not isinstance(ex, dict) or any(p not in POLICIES or not isinstance(v, dict) for p, v in ex.items()):
            _fail(where, "exploitation", f"must map policy names ({', '.join(POLICIES)}) to the check's figures")
    if "checkpoint" in record and not isinstance(record["checkpoint"], str):
        _fail(where, "checkpoint", f"is {record['checkpoint']!r}, expected a path")
    return record


def upgrade_eval_record(raw: dict, where: str | Path = "evaluation record") -> dict:
    """An evaluation record of an older shape as this schema (policies renamed, :data:`OLD_NAMES`; phase 2's
    top-level summaries moved under ``summaries``); a current one unchanged."""
    if not isinstance(raw, dict):
        raise EvalRecordError(f"{where}: an evaluation record is a JSON object, got {type(raw).__name__}")
    if "schema" in raw:
        return raw
    rename = lambda d: {OLD_NAMES.get(k, k): v for k, v in d.items()}
    if not isinstance(raw.get("episodes"), dict):
        _fail(where, "episodes", "is missing: neither this schema nor an older evaluation file")
    if "summaries" in raw:  # phase3_eval.json, or dreamer.evaluate's file (which names its phase)
        phase, summaries = raw.get("phase", 3), rename(raw["summaries"])
    else:  # phase2_eval.json: one summary per policy at the top level
        missing = [p for p in raw["episodes"] if p not in raw]
        if missing:
            _fail(where, missing[0], "is missing: an older phase2_eval.json holds one summary per policy played")
        phase, summaries = 2, rename({p: raw[p] for p in raw["episodes"]})
    order = sorted(summaries, key=lambda p: POLICIES.index(p) if p in POLICIES else len(POLICIES))
    episodes = rename(raw["episodes"])
    out = {"schema": SCHEMA, "phase": phase, **{f: raw.get(f) for f in FIELDS[2:7]},
           "summaries": {p: summaries[p] for p in order}, "episodes": {p: episodes.get(p) for p in order}}
    if "exploitation" in raw:
        out["exploitation"] = rename(raw["exploitation"])
    if "checkpoint" in raw:
        out["checkpoint"] = raw["checkpoint"]
    return out


def read_eval_record(path: str | Path) -> dict:
    """The evaluation file at ``path`` as this schema (older shapes converted), checked."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EvalRecordError(f"{path}: not a readable evaluation file ({e})") from e
    return check_eval_record(upgrade_eval_record(raw, path), path)


def eval_json(record: dict) -> bytes:
    """The file's bytes (checked first, so no file of another shape is ever written)."""
    return json.dumps(check_eval_record(record), indent=1, default=float).encode()
