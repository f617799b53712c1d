"""The play page's HTTP API without a browser: keys become decisions of the KV-cached rollout, frames
change, the agent's suggestion is reported, restarts use real states, and bad input is refused."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest
import torch

from dreamer import play
from dreamer.viewer.load import load_world
from dreamer.viewer.server import PortInUseError, make_server, url_of
from dreamer.viewer.session import PlayError, PlaySession


def serve(session: PlaySession):
    server = make_server(session, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def call(url: str, path: str, body: dict | None = None, raw: bytes | None = None):
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path.lstrip("/"), data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def crafter_server(crafter_run):
    server = serve(PlaySession(load_world(crafter_run["phase2"], device="cpu"), context=2))
    yield server, url_of(server)
    server.shutdown()
    server.server_close()


def test_page_and_info(crafter_server):
    server, url = crafter_server
    assert url.startswith("http://localhost:") and server.server_address[0] == "127.0.0.1"
    code, html = call(url, "/")
    assert code == 200 and b"play.js" in html
    code, js = call(url, "/play.js")
    assert code == 200 and b"/api/step" in js
    code, body = call(url, "/api/info")
    info = json.loads(body)
    assert code == 200 and info["S"] == 8 and info["agent"] and info["keymap"]["kind"] == "crafter"
    assert len({b["value"] for b in info["keymap"]["bindings"]}) == 17 and info["size"] == 64
    assert call(url, "/nope")[0] == 404


def test_keys_drive_decisions(crafter_server):
    _, url = crafter_server
    state = json.loads(call(url, "/api/reset", {"episode": "ep1", "start": 1})[1])
    assert state["episode"] == "ep1" and state["start"] == 1 and state["decision"] == 0 and state["action"] is None
    frames = [state["frame"]]
    max_time = json.loads(call(url, "/api/info")[1])["max_time"]
    for i, (key, name) in enumerate([("a", "move_left"), ("d", "move_right"), (" ", "do"), ("arrowup", "move_up")] * 3):
        code, body = call(url, "/api/step", {"keys": [key]})
        s = json.loads(body)
        assert code == 200 and s["action"] == name and s["decision"] == i + 1, s.get("error")
        assert s["frame"].startswith("data:image/png;base64,") and s["frame"] != frames[-1]
        assert s["history"] <= max_time  # past max_time the rollout restarts from the last half
        assert set(s["latency_ms"]) == {"dynamics_ms", "decode_ms", "agent_ms", "total_ms"}
        frames.append(s["frame"])
    agent = s["agent"]
    assert agent["action"] == agent["actions"][0] and len(agent["chunk"]) == 8 and 0 <= agent["continue"] <= 1
    s = json.loads(call(url, "/api/step", {"agent": True})[1])
    assert s["action_vector"] == agent["chunk"][0] and s["action"] == agent["action"]
    s = json.loads(call(url, "/api/step", {"action": [5]})[1])
    assert s["action"] == "do" and s["mean_latency_ms"] > 0
    assert json.loads(call(url, "/api/state")[1])["decision"] == s["decision"]


def test_bad_requests_get_400_naming_the_problem(crafter_server):
    _, url = crafter_server
    for body, raw, message in [({"episode": "nope"}, None, "episode 'nope' is not in the latent cache"),
                               ({"episode": "ep1", "start": 99}, None, "start=99 is outside episode 'ep1'"),
                               (None, b"{not json", "not JSON")]:
        code, out = call(url, "/api/reset", body, raw)
        assert code == 400 and message in json.loads(out)["error"]
    for body, message in [({"action": [17]}, "values in [0, card)"), ({"action": [1, 2]}, "must hold 1 values"),
                          ({"keys": "a"}, "'keys' must be a list")]:
        code, out = call(url, "/api/step", body)
        assert code == 400 and message in json.loads(out)["error"]


def test_phase1_checkpoint_has_no_agent(crafter_run):
    session = PlaySession(load_world(crafter_run["phase1"], device="cpu"))
    for ckpt in ("phase1", "phase2"):  # the page shows phase 1's held-out figures, also for a phase-2 checkpoint
        wm = PlaySession(load_world(crafter_run[ckpt], device="cpu")).info()["world_model"]
        assert not wm["ok"] and "NOT better than copying the last latent at h2" in wm["verdict"], wm
    s = session.step(keys=["s"])
    assert s["agent"] is None and s["action"] == "move_down"
    with pytest.raises(PlayError, match="no agent"):
        session.step(agent=True)


def test_minecraft_keys_combine(minecraft_run):
    session = PlaySession(load_world(minecraft_run["phase2"], device="cpu"))
    assert session.info()["keymap"]["kind"] == "minerl_v04"
    s = session.step(keys=["w", " ", "arrowright"])
    assert s["action"].startswith("forward+jump+camera_yaw=") and len(s["action_vector"]) == 15


def test_same_seed_same_dream(s4_run):
    a, b = (PlaySession(load_world(s4_run["phase2"], device="cpu"), seed=3) for _ in range(2))
    for s in (a, b):
        s.reset("ep2", 2)
    for key in ("a", "s"):
        assert a.step(keys=[key])["frame"] == b.step(keys=[key])["frame"]
    assert torch.equal(a.z[-1], b.z[-1]) and a.world.S == 4


def test_port_in_use_is_named(crafter_run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            make_server(None, "127.0.0.1", port)
        with pytest.raises(SystemExit, match=f"play: .*port {port} on 127.0.0.1 is already in use.*--port"):
            play.main(["--checkpoint", str(crafter_run["phase2"]), "--port", str(port)])


def test_play_cli_refuses_wrong_checkpoint(tmp_path):
    bad = tmp_path / "phase0.pt"
    torch.save({"step": 1}, bad)
    with pytest.raises(SystemExit, match=r"play: checkpoint .*phase0\.pt holds no world model"):
        play.main(["--checkpoint", str(bad), "--port", "0"])
