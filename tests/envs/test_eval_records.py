"""The one evaluation schema (dreamer.envs.records): built and checked, refused naming the file and the field, and
the shapes older runs wrote (phase 2's top-level summaries, phase 3's phase2_bc / phase3) read as it."""

from __future__ import annotations

import json

import pytest

from dreamer.envs.records import (
    FIELDS,
    EvalRecordError,
    check_eval_record,
    eval_json,
    eval_record,
    read_eval_record,
    upgrade_eval_record,
)


def _results(seeds, ret=1.0):
    return [{"return": ret + i, "length": 10 + i, "seed": s, "terminated": True, "truncated": False,
             "achievements": ["collect_wood"] if i else []} for i, s in enumerate(seeds)]


def _record(**extras):
    seeds = [7, 8]
    return eval_record(2, seeds, 50, 16, False, 1.5, {"random": _results(seeds), "bc": _results(seeds, 2.0)},
                       **extras)


def test_a_record_is_built_summarised_and_checked(tmp_path):
    rec = _record()
    assert list(rec)[: len(FIELDS)] == list(FIELDS) and rec["schema"] == 1 and rec["phase"] == 2
    assert list(rec["summaries"]) == list(rec["episodes"]) == ["random", "bc"]
    assert rec["summaries"]["bc"]["episodes"] == 2 and rec["summaries"]["bc"]["return_mean"] == pytest.approx(2.5)
    path = tmp_path / "phase2_eval.json"
    path.write_bytes(eval_json(rec))
    assert read_eval_record(path) == json.loads(json.dumps(rec))
    assert check_eval_record(_record(exploitation={"bc": {"starts": 0}}))["exploitation"] == {"bc": {"starts": 0}}


@pytest.mark.parametrize("change, field", [
    (lambda r: r.pop("context"), "'context' is missing"),
    (lambda r: r.update(schema=2), "'schema' is 2"),
    (lambda r: r.update(phase=5), "'phase' is 5"),
    (lambda r: r.update(seeds=[]), "'seeds'"),
    (lambda r: r.update(greedy="no"), "'greedy'"),
    (lambda r: r.update(extra=1), "'extra' is not part of schema 1"),
    (lambda r: r["summaries"].update(data_frequency=r["summaries"]["bc"]), "'summaries.data_frequency' is not a policy"),
    (lambda r: r["summaries"]["bc"].pop("return_mean"), "'summaries.bc.return_mean'"),
    (lambda r: r["episodes"].update(bc=r["episodes"]["bc"][:1]), "'episodes.bc' must list one result per seed"),
    (lambda r: r["episodes"]["bc"].reverse(), "'episodes.bc' does not play the seeds in the order"),
    (lambda r: r["episodes"]["random"][0].pop("length"), r"'episodes.random\[0\].length'"),
    (lambda r: r.update(episodes={"bc": r["episodes"]["bc"], "random": r["episodes"]["random"]}), "'episodes' names"),
])
def test_a_record_off_the_schema_is_refused_naming_the_file_and_the_field(change, field):
    rec = _record()
    change(rec)
    with pytest.raises(EvalRecordError, match=f"^run/phase2_eval.json: field {field}"):
        check_eval_record(rec, "run/phase2_eval.json")


def test_files_of_older_runs_are_read_as_the_schema(tmp_path):
    seeds = [7, 8]
    old2 = {"seeds": seeds, "max_steps": 50, "context": 16, "greedy": False, "seconds": 3.0,
            "bc": None, "random": None, "data_frequency": None,
            "episodes": {"bc": _results(seeds, 2.0), "random": _results(seeds), "data_frequency": _results(seeds, 1.5)}}
    new = eval_record(2, seeds, 50, 16, False, 3.0, {"random": old2["episodes"]["random"],
                                                     "frame_blind": old2["episodes"]["data_frequency"],
                                                     "bc": old2["episodes"]["bc"]})
    old2.update(bc=new["summaries"]["bc"], random=new["summaries"]["random"],
                data_frequency=new["summaries"]["frame_blind"])
    (tmp_path / "phase2_eval.json").write_text(json.dumps(old2))
    assert read_eval_record(tmp_path / "phase2_eval.json") == json.loads(json.dumps(new))

    old3 = {"seeds": seeds, "max_steps": 50, "context": 16, "greedy": False,
            "summaries": {"random": new["summaries"]["random"], "phase2_bc": new["summaries"]["bc"],
                          "phase3": new["summaries"]["bc"]},
            "episodes": {"random": old2["episodes"]["random"], "phase2_bc": old2["episodes"]["bc"],
                         "phase3": old2["episodes"]["bc"]},
            "exploitation": {"phase2_bc": {"starts": 0}, "phase3": {"starts": 0}}}
    (tmp_path / "phase3_eval.json").write_text(json.dumps(old3))
    rec = read_eval_record(tmp_path / "phase3_eval.json")
    assert rec["phase"] == 3 and rec["seconds"] is None  # not measured then
    assert list(rec["summaries"]) == list(rec["episodes"]) == ["random", "bc", "pmpo"]
    assert set(rec["exploitation"]) == {"bc", "pmpo"}
    assert upgrade_eval_record(rec) is rec  # a current record is left as it is
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(EvalRecordError, match="broken.json: not a readable evaluation file"):
        read_eval_record(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text(json.dumps({"seeds": seeds}))
    with pytest.raises(EvalRecordError, match="other.json: field 'episodes' is missing"):
        read_eval_record(tmp_path / "other.json")
