// The play page: keys -> POST /api/step, one decision per key press (or continuously), frame at 4x.
"use strict";
const $ = (id) => document.getElementById(id);
let info = null;
const held = [];          // keys held, in pressing order (the server maps them to an action)
let queue = Promise.resolve();
let timer = null;
let busy = false;

function keyName(e) { return e.key === " " ? " " : e.key.toLowerCase(); }
const GLYPHS = {" ": "space", "arrowleft": "\u2190", "arrowright": "\u2192", "arrowup": "\u2191", "arrowdown": "\u2193"};
function shown(k) { return GLYPHS[k] || k; }

async function call(path, body) {
  const r = await fetch(path, body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

let playing = null;        // the episode on screen: the selector follows it when it changes (a random restart)

function show(s) {
  $("frame").src = s.frame;
  $("episode").textContent = s.episode + " / " + s.start;
  if (s.episode !== playing) { playing = s.episode; $("episode-select").value = s.episode; }
  $("decision").textContent = String(s.decision);
  $("action").textContent = s.action === null ? "-" : s.action;
  const ms = s.latency_ms;
  $("latency").textContent = Object.entries(ms).map(([k, v]) => k.replace("_ms", "") + " " + v.toFixed(1)).join(", ");
  $("mean-latency").textContent = s.mean_latency_ms === null ? "-" : s.mean_latency_ms.toFixed(1);
  if (s.agent) {
    $("agent-action").textContent = s.agent.action + (info.S > 1 ? "  (chunk: " + s.agent.actions.join(", ") + ")" : "");
    $("agent-reward").textContent = s.agent.reward.toFixed(3);
    $("agent-continue").textContent = s.agent.continue.toFixed(3);
  }
  document.body.dataset.decision = String(s.decision);
  $("error").textContent = "";
}

function fail(err) { $("error").textContent = String(err.message || err); }

function enqueue(path, body) {
  queue = queue.then(async () => { busy = true; try { show(await call(path, body)); } catch (e) { fail(e); } finally { busy = false; } });
  return queue;
}

function step() {
  if ($("agent-drives").checked && info.agent) return enqueue("/api/step", {agent: true});
  return enqueue("/api/step", {keys: held.slice()});
}

function setRunning() {
  if (timer !== null) { clearInterval(timer); timer = null; }
  if ($("run").checked) {
    const rate = Math.max(0.2, Math.min(20, Number($("rate").value) || 2));
    timer = setInterval(() => { if (!busy) step(); }, 1000 / rate);
  }
}

function typing(e) { return e.target && (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") && e.target.type !== "checkbox"; }

document.addEventListener("keydown", (e) => {
  if (!info || typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = keyName(e);
  if (!info.keymap.bindings.some((b) => b.key === k)) return;
  e.preventDefault();
  if (e.repeat) return;
  if (!held.includes(k)) held.push(k);
  if (!$("run").checked) step();
});
document.addEventListener("keyup", (e) => {
  const i = held.indexOf(keyName(e));
  if (i >= 0) held.splice(i, 1);
});
window.addEventListener("blur", () => { held.length = 0; });

function restart(random) {
  const body = random ? {} : {episode: $("episode-select").value};
  const start = $("start").value;
  if (!random && start !== "") body.start = Number(start);
  return enqueue("/api/reset", body);
}

async function init() {
  info = await call("/api/info");
  $("checkpoint").textContent = info.checkpoint + "  \u00b7  " + info.env_id + ", S=" + info.S + " frames per decision, "
    + info.num_tokens + " tokens x " + info.channels + " channels, " + info.sample_steps + " sampling steps"
    + (info.agent ? ", with agent" : ", no agent (phase-1 checkpoint)");
  $("world-model").textContent = info.world_model
    ? (info.world_model.ok ? "" : "\u26a0 ") + "World model, held out: " + info.world_model.verdict
    : "World model: no held-out figures found (phase 1's final checkpoint is not beside this one)";
  if (info.world_model && !info.world_model.ok) $("world-model").style.color = "#c60";
  $("frame").width = 4 * info.size;
  $("frame").height = 4 * info.size;
  for (const el of document.querySelectorAll(".agent")) el.style.display = info.agent ? "" : "none";
  for (const [name, len] of Object.entries(info.episodes)) {
    const o = document.createElement("option");
    o.value = name; o.textContent = name + " (" + len + " latents)";
    $("episode-select").appendChild(o);
  }
  const byLabel = new Map();  // one row per action, all its keys
  for (const b of info.keymap.bindings) byLabel.set(b.label, [...(byLabel.get(b.label) || []), b.key]);
  const rows = [...byLabel].map(([label, keys]) => "<tr><td>" + keys.map((k) => "<kbd>" + shown(k) + "</kbd>").join(" ")
    + "</td><td>" + label + "</td></tr>");
  $("keys").innerHTML = rows.join("");
  $("restart").onclick = () => restart(false);
  $("restart-random").onclick = () => restart(true);
  $("run").onchange = setRunning;
  $("rate").onchange = setRunning;
  $("agent-step").onclick = () => enqueue("/api/step", {agent: true});
  show(await call("/api/state"));
  document.body.dataset.ready = "1";
}

init().catch(fail);
