"""The ladder's stage runner (bench/bench_agent.py): stages in order, done stages skipped, the PMPO seeds
run together with their share of the cores, a failed seed named."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_agent", ROOT / "bench" / "bench_agent.py")
bench_agent = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_agent)

# A stage: records its start and end time and its --set threads=..., then writes its 'done' file.
STAGE = ("import json, sys, time; from pathlib import Path; t0 = time.time(); time.sleep(float(sys.argv[2])); "
         "Path(sys.argv[1]).write_text(json.dumps({'start': t0, 'end': time.time(), 'argv': sys.argv[3:]}))")


def _stages(tmp: Path, names: list[str], sleep: float = 1.5):
    return [(n, [sys.executable, "-c", STAGE, str(tmp / f"{n.replace('/', '_')}.json"), str(sleep)],
             tmp / f"{n.replace('/', '_')}.json") for n in names]


def test_seeds_run_together_after_the_serial_stages_and_done_stages_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_agent.os, "cpu_count", lambda: 2)
    cfg = SimpleNamespace(run_dir=tmp_path)
    stages = _stages(tmp_path, ["collect", "phase1", "phase3/seed0", "phase3/seed1"])
    stages[0][2].write_text(json.dumps({"start": 0, "end": 0, "argv": []}))  # collect already done
    times: dict = {}
    bench_agent.run_stages(stages, cfg, 2, times, tmp_path / "ladder.json")
    rec = {n: json.loads(done.read_text()) for n, _, done in stages}
    assert rec["collect"]["end"] == 0 and "collect" not in times  # skipped, not rerun
    s0, s1 = rec["phase3/seed0"], rec["phase3/seed1"]
    assert s0["start"] >= rec["phase1"]["end"] and s1["start"] >= rec["phase1"]["end"]
    assert s0["start"] < s1["end"] and s1["start"] < s0["end"]  # the two seeds overlap in time
    assert s0["argv"] == ["--set", "threads=1"] and rec["phase1"]["argv"] == []  # 2 cores / 2 seeds
    assert set(json.loads((tmp_path / "ladder.json").read_text())["seconds"]) == {
        "phase1", "phase3/seed0 + phase3/seed1 (at once)"}
    assert (tmp_path / "phase3_seed0.log").is_file() and (tmp_path / "phase3_seed1.log").is_file()


def test_one_job_runs_the_seeds_one_by_one_and_a_failed_seed_is_named(tmp_path):
    cfg = SimpleNamespace(run_dir=tmp_path, device="cpu")
    stages = _stages(tmp_path, ["phase3/seed0", "phase3/seed1"], sleep=0.2)
    bench_agent.run_stages(stages, cfg, 1, {}, tmp_path / "ladder.json")
    r0, r1 = (json.loads(done.read_text()) for _, _, done in stages)
    assert r1["start"] >= r0["end"] and r0["argv"] == []
    bad = [("phase3/seed2", [sys.executable, "-c", "raise SystemExit(1)"], tmp_path / "never"),
           *_stages(tmp_path, ["phase3/seed3"], sleep=0.1)]
    with pytest.raises(SystemExit, match="failed: phase3/seed2 "):
        bench_agent.run_stages(bad, cfg, 2, {}, tmp_path / "ladder.json")
    args = SimpleNamespace(rl_jobs=0, rl_seeds=[0, 1, 2])
    assert bench_agent.rl_jobs(cfg, args) == 3 and bench_agent.rl_jobs(SimpleNamespace(device="cuda"), args) == 1
    assert bench_agent.rl_jobs(cfg, SimpleNamespace(rl_jobs=5, rl_seeds=[0, 1])) == 2


def test_the_report_reads_the_evaluation_files_of_old_and_new_runs(tmp_path):
    """--report-only reprints the ladder from any run folder: phase2_eval.json / phase3_eval.json in the one schema,
    or in the shapes older runs wrote (converted by dreamer.envs.records.read_eval_record)."""
    from dreamer.envs.records import eval_json, eval_record

    def results(seeds, ret):
        return [{"return": ret + i, "length": 10, "seed": s} for i, s in enumerate(seeds)]

    seeds = [7, 8]
    run = tmp_path / "r"
    run.mkdir()
    new2 = eval_record(2, seeds, 50, 16, False, 1.0, {"random": results(seeds, 0.0),
                                                      "frame_blind": results(seeds, 1.0), "bc": results(seeds, 2.0)})
    old2 = {"seeds": seeds, "max_steps": 50, "context": 16, "greedy": False, "seconds": 1.0,
            "bc": new2["summaries"]["bc"], "random": new2["summaries"]["random"],
            "data_frequency": new2["summaries"]["frame_blind"],
            "episodes": {"bc": new2["episodes"]["bc"], "random": new2["episodes"]["random"],
                         "data_frequency": new2["episodes"]["frame_blind"]}}
    pmpo = {s: eval_record(3, seeds, 50, 16, False, 1.0, {"pmpo": results(seeds, 3.0 + s)}) for s in (0, 1)}
    (tmp_path / "r_rl0").mkdir()
    (tmp_path / "r_rl0" / "phase3_eval.json").write_bytes(eval_json(pmpo[0]))
    (tmp_path / "r_rl1").mkdir()  # an older run: phase 3 named its policy "phase3"
    (tmp_path / "r_rl1" / "phase3_eval.json").write_text(json.dumps(
        {k: v for k, v in pmpo[1].items() if k not in ("schema", "phase", "seconds", "summaries", "episodes")}
        | {"summaries": {"phase3": pmpo[1]["summaries"]["pmpo"]}, "episodes": {"phase3": pmpo[1]["episodes"]["pmpo"]}}))
    cfg = SimpleNamespace(run_dir=run, checkpoint_root=tmp_path, run="r")
    tables = []
    for p2 in (old2, new2):
        (run / "phase2_eval.json").write_text(json.dumps(p2))
        tables.append(bench_agent.report(cfg, [0, 1]))
    assert tables[0] == tables[1].replace(str(run), str(run))
    table = tables[0]
    for name, mean in (("random", "0.50"), ("frame_blind", "1.50"), ("bc", "2.50"), ("pmpo_seed0", "3.50"),
                       ("pmpo_seed1", "4.50"), ("pmpo_pooled", "4.00")):
        assert any(line.startswith(name) and f" {mean} ± " in line for line in table.splitlines()), (name, table)
    assert (run / "ladder.png").is_file()
