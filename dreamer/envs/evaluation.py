"""Real-env evaluation figures (docs/design.md §6): per-episode results summarised, the Crafter score, the
comparison table, the plain verdict of one policy against another and the comparison chart. Episodes are played
by :func:`dreamer.envs.runner.run_episodes` (every policy, baselines and agents); the results of an evaluation are
written in the one schema of :mod:`dreamer.envs.records`; comparing the agents with the baselines at the end of a
phase is :mod:`dreamer.pipeline.evaluate`.

A per-episode result is a dict with at least ``return`` (float) and ``length`` (int), and for Crafter
``achievements``: the names unlocked during the episode (a list, or a dict name → count where a
count > 0 means unlocked).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from dreamer.envs.crafter_env import crafter_names
from dreamer.envs.runner import unlocked
from dreamer.tags import tag

log = logging.getLogger(__name__)


def crafter_achievements() -> tuple[str, ...]:
    return crafter_names()["achievements"]


def crafter_score(success_rates_percent: dict[str, float]) -> float:
    """S = exp(mean_i ln(1 + s_i)) − 1 over all 22 Crafter achievements, s_i in percent (0…100)."""
    names = crafter_achievements()
    missing = sorted(set(names) - set(success_rates_percent))
    extra = sorted(set(success_rates_percent) - set(names))
    if missing or extra:
        raise ValueError(f"crafter_score needs exactly the 22 Crafter achievements: missing {missing}, unknown {extra}")
    rates = np.array([float(success_rates_percent[n]) for n in names])
    if not np.all((rates >= 0) & (rates <= 100)):
        bad = {n: success_rates_percent[n] for n in names if not 0 <= success_rates_percent[n] <= 100}
        raise ValueError(f"success rates must be percentages in [0, 100], got {bad}")
    return float(math.exp(np.mean(np.log1p(rates))) - 1.0)


def summarise(results: list[dict]) -> dict:
    """Mean ± std (sample std, ddof=1) of return and length, a 95% normal interval of the mean return,
    per-achievement success rates in percent and, when achievements are Crafter's, the Crafter score; and
    how many episodes ended by each ``death_cause`` (Crafter)."""
    if not results:
        raise ValueError("summarise: no episode results")
    for i, r in enumerate(results):
        for key in ("return", "length"):
            if key not in r:
                raise ValueError(f"summarise: result {i} has no '{key}' (keys: {sorted(r)})")
    n = len(results)
    returns = np.array([float(r["return"]) for r in results])
    lengths = np.array([float(r["length"]) for r in results])
    ddof = 1 if n > 1 else 0
    out = {
        "episodes": n,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std(ddof=ddof)),
        "return_ci95": float(1.96 * returns.std(ddof=ddof) / math.sqrt(n)),
        "length_mean": float(lengths.mean()),
        "length_std": float(lengths.std(ddof=ddof)),
    }
    with_ach = [r for r in results if "achievements" in r]
    if with_ach:
        if len(with_ach) != n:
            raise ValueError(f"summarise: only {len(with_ach)} of {n} results have 'achievements'")
        per_episode = [unlocked(r["achievements"]) for r in results]
        seen = set().union(*per_episode)
        crafter = set(crafter_achievements())
        names = sorted(crafter) if seen <= crafter else sorted(seen)
        rates = {a: 100.0 * sum(a in u for u in per_episode) / n for a in names}
        out["success_rates"] = rates
        out["score"] = crafter_score(rates) if seen <= crafter else None
    causes = [r["death_cause"] for r in results if "death_cause" in r]
    if causes:
        out["deaths"] = {c: causes.count(c) for c in sorted(set(causes))}
    return out


def flat_scalars(summary: dict) -> dict[str, float]:
    """Numeric leaves of a summary, nested keys joined by '/' (for TensorBoard); None is skipped."""
    out: dict[str, float] = {}
    for k, v in summary.items():
        if isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in flat_scalars(v).items()})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def _num(x, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def comparison_table(summaries: dict[str, dict]) -> str:
    """One row per policy (N, return mean ± std and 95% interval, length, Crafter score), then one row
    per achievement with each policy's success rate in percent."""
    names = list(summaries)
    w = max(10, *(len(n) for n in names))
    head = f"{'policy':{w}}  {'N':>4}  {'return mean ± std':>20}  {'95% CI':>8}  {'length':>15}  {'score':>7}"
    rows = [head, "-" * len(head)]
    for n, s in summaries.items():
        ret = f"{s['return_mean']:.2f} ± {s['return_std']:.2f}"
        length = f"{s['length_mean']:.1f} ± {s['length_std']:.1f}"
        rows.append(f"{n:{w}}  {s['episodes']:>4}  {ret:>20}  {'±' + _num(s['return_ci95']):>8}  {length:>15}  "
                    f"{_num(s.get('score')):>7}")
    achievements = sorted({a for s in summaries.values() for a in (s.get("success_rates") or {})})
    if achievements:
        wa = max(len(a) for a in achievements) + 2
        rows += ["", f"{'success rate (%)':{wa}}" + "".join(f"{n:>{w + 2}}" for n in names)]
        for a in achievements:
            rates = [(s.get("success_rates") or {}).get(a) for s in summaries.values()]
            rows.append(f"{a:{wa}}" + "".join(f"{_num(r, '{:.1f}'):>{w + 2}}" for r in rates))
    return "\n".join(rows)


def beats(name: str, summary: dict, base_name: str, base: dict) -> tuple[bool, str]:
    """Whether ``name`` beats ``base_name`` in the real env, in one plain line: beyond both 95% intervals
    (its mean minus its interval above the base's mean plus the base's), a difference inside them, or worse."""
    m, ci = summary["return_mean"], summary.get("return_ci95") or 0.0
    bm, bci = base["return_mean"], base.get("return_ci95") or 0.0
    score = (f"; score {summary['score']:.2f}% vs {base['score']:.2f}%"
             if summary.get("score") is not None and base.get("score") is not None else "")
    figures = f"{name} return {m:.2f} ± {ci:.2f} vs {base_name} {bm:.2f} ± {bci:.2f}{score}"
    if m - ci > bm + bci:
        return True, f"{figures}: {name} beats {base_name} beyond both 95% intervals"
    if m > bm:
        return False, (f"{figures}: WARNING, {name} does NOT clearly beat {base_name} (higher, but inside the "
                       "intervals: no difference)")
    return False, f"{figures}: WARNING, {name} does NOT beat {base_name}"


def comparison_chart(summaries: dict[str, dict], title: str = "") -> np.ndarray:
    """The comparison as a picture, uint8 (H, W, 3): one bar per policy, its mean return with the 95% interval
    as a whisker, labelled with the return and the Crafter score (when known)."""
    from PIL import Image, ImageDraw, ImageFont

    names = list(summaries)
    bar, gap, left, top, height = 70, 30, 50, 40, 220
    width = left + len(names) * (bar + gap) + gap
    img = Image.new("RGB", (max(width, 320), top + height + 60), "white")
    d, font = ImageDraw.Draw(img), ImageFont.load_default()
    highs = [s["return_mean"] + (s.get("return_ci95") or 0.0) for s in summaries.values()]
    lows = [min(0.0, s["return_mean"] - (s.get("return_ci95") or 0.0)) for s in summaries.values()]
    hi, lo = max([*highs, 1e-6]), min(lows)
    y = lambda v: top + height - (v - lo) / (hi - lo) * height
    d.line([(left - 5, y(0.0)), (width - gap // 2, y(0.0))], fill="black")
    for v in np.linspace(lo, hi, 5):
        d.text((4, y(v) - 6), f"{v:.1f}", fill="gray", font=font)
    colours = ["#9e9e9e", "#bdbdbd", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2"]
    for i, (name, s) in enumerate(summaries.items()):
        x0 = left + gap + i * (bar + gap)
        m, ci = s["return_mean"], s.get("return_ci95") or 0.0
        d.rectangle([x0, min(y(m), y(0.0)), x0 + bar, max(y(m), y(0.0))], fill=colours[i % len(colours)])
        cx = x0 + bar // 2
        d.line([(cx, y(m - ci)), (cx, y(m + ci))], fill="black", width=2)
        for v in (m - ci, m + ci):
            d.line([(cx - 8, y(v)), (cx + 8, y(v))], fill="black", width=2)
        score = f"score {s['score']:.1f}%" if s.get("score") is not None else ""
        d.text((x0, top + height + 8), name[:12], fill="black", font=font)
        d.text((x0, top + height + 22), f"{m:.2f} ± {ci:.2f}", fill="black", font=font)
        d.text((x0, top + height + 36), score, fill="black", font=font)
    d.text((left, 10), (title + "  " if title else "") + "mean return, 95% interval (real env)", fill="black",
           font=font)
    return np.asarray(img)


def save_comparison_chart(summaries: dict[str, dict], path, title: str = "", writer=None, step: int = 0,
                          phase: int | None = None) -> np.ndarray:
    """:func:`comparison_chart` written as a PNG at ``path`` (atomically) and, given a SummaryWriter, as the
    TensorBoard image ``eval/<phase>/results``."""
    import io

    from PIL import Image

    from dreamer.atomic import atomic_write_bytes

    pic = comparison_chart(summaries, title)
    buf = io.BytesIO()
    Image.fromarray(pic).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    if writer is not None:
        writer.add_image(tag("eval", phase, "results"), pic, step, dataformats="HWC")
    return pic
