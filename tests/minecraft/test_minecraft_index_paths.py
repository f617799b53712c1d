"""VPT / BASALT index files (synthetic and the real copies) and refusal of paths escaping the data root."""

from __future__ import annotations

import json

import pytest
from mc_fixtures import REAL_FIXTURES

from dreamer.minecraft.paths import MinecraftDataError, safe_filename, safe_join
from dreamer.minecraft.vpt_index import parse_relpath, read_vpt_index

BASEDIR = "https://openaipublic.blob.core.windows.net/minecraft-rl/"


def write_index(path, relpaths, basedir=BASEDIR):
    path.write_text(json.dumps({"basedir": basedir, "relpaths": relpaths}))
    return path


def test_parse_relpath_variants():
    p = parse_relpath("data/6.13/Player129-f153ac423f61-20210617-171344.mp4")
    assert p == {"version": "6.13", "alias": "Player129", "session": "f153ac423f61", "date": "20210617",
                 "time": "171344"}
    p = parse_relpath("data/pen-animals/shabby-viridian-beaver-d617a7a42b641-20220728-101010.mp4")
    assert p["alias"] == "shabby-viridian-beaver" and p["session"] == "d617a7a42b641"  # 13 hex digits
    p = parse_relpath("8.0/cheeky-cornflower-setter-74ae6c2eae2e-20220315-122354")  # README example, no .mp4
    assert p["version"] == "8.0" and p["alias"] == "cheeky-cornflower-setter" and p["time"] == "122354"
    assert parse_relpath("data/x/odd_name.mp4") == {"version": "x", "alias": "", "session": "", "date": "",
                                                     "time": ""}


def test_index_dedups_and_adds_mp4(tmp_path):
    rels = ["data/7.1/A-0123456789ab-20220101-000000.mp4", "data/7.1/A-0123456789ab-20220101-000000.mp4",
            "data/7.1/B-0123456789ab-20220101-000001"]
    ix = read_vpt_index(write_index(tmp_path / "i.json", rels))
    assert ix.duplicates == 1 and ix.basedir == BASEDIR
    assert ix.relpaths == [rels[0], rels[2] + ".mp4"]
    recs = ix.recordings(tmp_path / "root")
    assert recs[1].video == tmp_path / "root" / "data/7.1/B-0123456789ab-20220101-000001.mp4"
    assert recs[1].actions.name == "B-0123456789ab-20220101-000001.jsonl"
    assert ix.recordings(tmp_path, only_present=True) == []
    flat = tmp_path / "flat"  # a downloader that saved files without the data/<version>/ folders
    flat.mkdir()
    (flat / "B-0123456789ab-20220101-000001.jsonl").write_text("{}")
    (rec,) = ix.recordings(flat, only_present=True)
    assert rec.video == flat / "B-0123456789ab-20220101-000001.mp4" and rec.version == "7.1"


@pytest.mark.parametrize("bad", ["../../etc/passwd", "data/../../etc/passwd", "/etc/passwd", "\\\\server\\share\\x.mp4",
                                 "C:\\Windows\\x.mp4", "data\\..\\..\\x.mp4", "", "a\x00b.mp4"])
def test_malicious_relpaths_are_refused(tmp_path, bad):
    idx = write_index(tmp_path / "evil.json", ["data/6.13/ok-0123456789ab-20220101-000000.mp4", bad])
    with pytest.raises(MinecraftDataError, match=r"evil.json.*relpaths\[1\]") as e:
        read_vpt_index(idx)
    assert "refused" in str(e.value) or "non-empty" in str(e.value) or "NUL" in str(e.value)
    with pytest.raises(MinecraftDataError):
        safe_join(tmp_path, bad)


def test_safe_join_and_safe_filename(tmp_path):
    assert safe_join(tmp_path, "data/6.13/x.mp4") == tmp_path / "data" / "6.13" / "x.mp4"
    with pytest.raises(MinecraftDataError, match="climbs out"):
        safe_join(tmp_path, "data/../../etc/passwd")
    with pytest.raises(MinecraftDataError, match="absolute"):
        safe_join(tmp_path, "/etc/passwd")
    name = safe_filename("../../etc", "/passwd")
    assert "/" not in name and ".." not in name and name == "etc__passwd"
    assert safe_filename("..", "") == "episode"


def test_bad_index_files_fail_clearly(tmp_path):
    p = tmp_path / "i.json"
    p.write_text('{"basedir": "x", "relpaths": ["a.mp4"')
    with pytest.raises(MinecraftDataError, match="invalid JSON"):
        read_vpt_index(p)
    p.write_text('{"basedir": "x"}')
    with pytest.raises(MinecraftDataError, match="relpaths.*missing"):
        read_vpt_index(p)
    p.write_text('{"basedir": "x", "relpaths": [3]}')
    with pytest.raises(MinecraftDataError, match=r"relpaths\[0\].*string"):
        read_vpt_index(p)
    p.write_text("[1, 2]")
    with pytest.raises(MinecraftDataError, match="JSON object"):
        read_vpt_index(p)


# Real index files: (file, relpaths after dedup, duplicates, relpaths with a 13-hex session id)
REAL = [
    ("vpt_index/all_6xx_Jun_29.json", 71865, 3, 0),
    ("vpt_index/all_7xx_Apr_6.json", 17886, 0, 0),
    ("vpt_index/all_8xx_Jun_29.json", 5096, 0, 0),
    ("vpt_index/all_9xx_Jun_29.json", 8698, 0, 0),
    ("vpt_index/all_10xx_Jun_29.json", 5661, 0, 0),
    ("vpt_index/6xx_tree_chop.json", 3896, 3, 0),
    ("basalt2022_index/find-cave-Jul-28.json", 5466, 0, 0),
    ("basalt2022_index/waterfall-Jul-28.json", 4230, 0, 0),
    ("basalt2022_index/pen-animals-Jul-28.json", 2833, 0, 2),
    ("basalt2022_index/build-house-Jul-28.json", 1399, 0, 0),
]


@pytest.mark.skipif(not REAL_FIXTURES.is_dir(), reason="real Minecraft fixtures not present")
@pytest.mark.parametrize("name,count,dups,hex13", REAL, ids=[r[0].split("/")[1] for r in REAL])
def test_real_index_files(name, count, dups, hex13):
    ix = read_vpt_index(REAL_FIXTURES / name)
    assert ix.basedir == BASEDIR and len(ix.relpaths) == count and ix.duplicates == dups
    parsed = [parse_relpath(r) for r in ix.relpaths[:: max(1, count // 2000)]]
    assert all(p["session"] and p["date"] and p["version"] for p in parsed)
    if hex13:
        assert sum(len(parse_relpath(r)["session"]) == 13 for r in ix.relpaths) == hex13
    if "basalt" in name:
        assert {parse_relpath(r)["version"] for r in ix.relpaths} == {name.split("/")[1].rsplit("-", 2)[0]}
