r"""The paper's off-policy LLM experiment at tiny scale: AsymRE over delta_v, stale behaviour.

Claim under test (arXiv 2506.20520, Sec. 5): with a behaviour policy mu that lags N steps
behind the trained policy pi, AsymRE (gradient ascent on E_{y~mu}[(r(y) - V) log pi(y)],
V = mean of the G rewards of the prompt + delta_v) trains stably for delta_v < 0, faster the
closer delta_v is to 0, while delta_v >= 0 collapses (train and held-out accuracy fall,
entropy vanishes), earlier for larger delta_v; delta_v = -0.1 also beats GRPO in the same
stale regime.

Pipeline (one process; the trainer's jitted step and the sampler are compiled once and
reused by every run of the same shapes):

1. warm start: a tiny llama (~0.9M parameters, byte-level tokenizer, chat template) trained
   by `llm.sft` on the synthetic arithmetic task until its temperature-1 accuracy on the RL
   held-out problems reaches a moderate level; saved as an HF folder `OUT/warm_start` that
   every run starts from (the held-out problems are excluded from its training data);
2. runs (`llm.trainer.train`): AsymRE for each delta_v with refresh_every = N (stale), the
   on-policy control (N = 1) and GRPO with the same N, for each seed; per-step metrics in
   `OUT/runs/<run>/seed<k>/metrics.jsonl`;
3. figures (`OUT/*.png`) and the summary table (`OUT/summary.md`, `OUT/summary.json`).

    python -m llm.experiments.offpolicy_sweep --preset tiny-arith --out runs/tiny_arith
    python -m llm.experiments.offpolicy_sweep --preset tiny-arith --quick --out runs/quick

Summary statistics (per run, then mean and spread over seeds): final = mean over the last
10% of steps (train accuracy, entropy) or the last evaluation (held-out accuracy); peak =
maximum of the moving average (window `smooth`) or of the evaluations; collapse step = the
first step whose moving-average train accuracy is below half of the first window's (the
warm start's), "-" when it never happens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- presets


@dataclasses.dataclass(frozen=True)
class Preset:
    """Everything a sweep needs; `train` holds the TrainConfig fields shared by all runs."""

    name: str
    sft: dict[str, Any]
    train: dict[str, Any]
    delta_vs: tuple[float, ...] = (-0.5, -0.2, -0.1, 0.0, 0.1, 0.3)
    refresh_every: int = 10  # N, the staleness of the behaviour policy
    on_policy_delta_vs: tuple[float, ...] = (-0.1,)  # N = 1 controls
    grpo: bool = True
    seeds: tuple[int, ...] = (0, 1, 2)
    smooth: int = 10
    quick_steps: int | None = None  # --quick: this many steps (default: a third)

    def quick(self) -> Preset:
        """One seed and fewer steps."""
        steps = self.quick_steps or max(self.train["num_steps"] // 3, 2)
        return dataclasses.replace(
            self,
            name=f"{self.name}-quick",
            seeds=self.seeds[:1],
            train={**self.train, "num_steps": steps},
        )


TINY_ARITH = Preset(
    name="tiny-arith",
    sft=dict(target_accuracy=0.3, max_steps=1500, eval_every=50, batch_size=64),
    train=dict(
        task="arithmetic",
        task_kwargs=dict(
            num_operands=2,
            digits=(1, 2),
            operators="+",
            num_examples=4000,
            num_eval_examples=200,
            seed=0,
        ),
        chat=True,
        instruction="",
        reward_scale="pm1",
        num_steps=100,
        prompts_per_step=8,
        samples_per_prompt=8,
        max_new_tokens=5,
        temperature=1.0,
        learning_rate=1e-3,
        max_grad_norm=1.0,
        eval_every=10,
        eval_prompts=200,
        eval_temperature=1.0,
        eval_top_p=1.0,
    ),
    on_policy_delta_vs=(-0.1, 0.3),
    quick_steps=40,
)

# A few-second variant for the test suite (llm.models.tiny "tiny" size, a handful of steps).
SMOKE = Preset(
    name="smoke",
    sft=dict(
        model=dict(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            intermediate_size=64,
        ),
        num_train_examples=500,
        target_accuracy=1.0,
        max_steps=4,
        eval_every=2,
        batch_size=16,
    ),
    train={
        **TINY_ARITH.train,
        "task_kwargs": {**TINY_ARITH.train["task_kwargs"], "num_examples": 64},
        "num_steps": 4,
        "prompts_per_step": 2,
        "samples_per_prompt": 4,
        "eval_every": 2,
        "eval_prompts": 8,
    },
    delta_vs=(-0.1, 0.1),
    refresh_every=2,
    seeds=(0, 1),
    smooth=2,
)

PRESETS = {p.name: p for p in (TINY_ARITH, SMOKE)}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One configuration of the sweep (all its seeds share the name)."""

    name: str
    label: str
    loss: str
    delta_v: float
    refresh_every: int


def run_specs(preset: Preset) -> list[RunSpec]:
    """Stale AsymRE per delta_v, the on-policy controls, GRPO in the stale regime."""
    n = preset.refresh_every
    specs = [
        RunSpec(f"asymre_dv{dv:+.2f}_N{n}", f"AsymRE δV={dv:+.1f}", "asymre", dv, n)
        for dv in preset.delta_vs
    ]
    specs += [
        RunSpec(f"asymre_dv{dv:+.2f}_N1", f"AsymRE δV={dv:+.1f}, on-policy", "asymre", dv, 1)
        for dv in preset.on_policy_delta_vs
    ]
    if preset.grpo:
        specs.append(RunSpec(f"grpo_N{n}", "GRPO", "grpo", 0.0, n))
    return specs


# ----------------------------------------------------------------------------- running


def _rl_held_out(preset: Preset, model_path: str):
    from llm.rl.loop import TrainConfig, load_task

    cfg = TrainConfig(model_path=model_path, **preset.train)
    _, eval_examples = load_task(cfg)
    return eval_examples[: cfg.eval_prompts]


def warm_start(preset: Preset, out: pathlib.Path, *, progress: bool = True) -> pathlib.Path:
    """The SFT warm start of the preset in `out/warm_start` (reused if already there)."""
    from llm.sft import SFTConfig, run_sft

    path = out / "warm_start"
    sft_cfg = SFTConfig(
        out_dir=str(path),
        task_kwargs={
            k: v
            for k, v in preset.train["task_kwargs"].items()
            if k in ("num_operands", "digits", "operators")
        },
        max_new_tokens=preset.train["max_new_tokens"],
        progress=progress,
        **preset.sft,
    )
    summary_file = path / "sft_summary.json"
    if summary_file.is_file():
        ignore = ("out_dir", "progress")
        saved = json.loads(summary_file.read_text())["config"]
        wanted = json.loads(json.dumps(dataclasses.asdict(sft_cfg)))
        if all(saved.get(k) == v for k, v in wanted.items() if k not in ignore):
            return path
    held_out = _rl_held_out(preset, str(path))
    run_sft(sft_cfg, held_out=held_out)
    return path


def _read_metrics(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_sweep(
    preset: Preset, out: str | pathlib.Path, *, progress: bool = True
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Warm start, every run of the preset (finished runs are reused), figures and table.

    Returns {run name: {seed: per-step metrics}}.
    """
    from llm.trainer import TrainConfig, train

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = warm_start(preset, out, progress=progress)
    specs = run_specs(preset)
    num_steps = preset.train["num_steps"]
    histories: dict[str, dict[int, list[dict[str, Any]]]] = {}
    timings = {}
    for spec in specs:
        histories[spec.name] = {}
        for seed in preset.seeds:
            run_dir = out / "runs" / spec.name / f"seed{seed}"
            history = _read_metrics(run_dir / "metrics.jsonl")
            if len(history) != num_steps:
                if run_dir.exists():
                    for f in run_dir.glob("metrics.jsonl"):
                        f.unlink()
                cfg = TrainConfig(
                    model_path=str(model_path),
                    loss=spec.loss,
                    delta_v=spec.delta_v,
                    refresh_every=spec.refresh_every,
                    seed=seed,
                    out_dir=str(run_dir),
                    tensorboard=False,
                    progress=progress,
                    log_every=10**9,
                    **preset.train,
                )
                t0 = time.perf_counter()
                history = train(cfg)
                timings[f"{spec.name}/seed{seed}"] = time.perf_counter() - t0
            histories[spec.name][seed] = history
    write_report(preset, histories, out)
    if timings:
        (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    return histories


# ----------------------------------------------------------------------------- analysis


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows where `key` is present; the step axis counts from 1."""
    rows = [r for r in history if key in r and r[key] is not None]
    return (
        np.array([r["step"] + 1 for r in rows], np.float64),
        np.array([r[key] for r in rows], np.float64),
    )


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to `window` values (shorter at the start)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    c = np.cumsum(np.insert(np.asarray(x, np.float64), 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def run_summary(history: Sequence[dict[str, Any]], smooth: int) -> dict[str, float | None]:
    """Final/peak accuracy, final entropy and the collapse step of one run."""
    steps, acc = _series(history, "accuracy")
    _, ent = _series(history, "entropy")
    _, ev = _series(history, "eval_accuracy")
    if len(acc) == 0:
        raise ValueError("history has no 'accuracy' rows")
    tail = max(len(acc) // 10, 1)
    acc_ma = moving_average(acc, smooth)
    first = float(acc[: min(smooth, len(acc))].mean())
    below = np.nonzero((np.arange(len(acc)) >= smooth - 1) & (acc_ma < 0.5 * first))[0]
    return dict(
        initial_train_acc=first,
        final_train_acc=float(acc[-tail:].mean()),
        peak_train_acc=float(acc_ma.max()),
        final_eval_acc=float(ev[-1]) if len(ev) else None,
        peak_eval_acc=float(ev.max()) if len(ev) else None,
        initial_entropy=float(ent[: min(smooth, len(ent))].mean()) if len(ent) else None,
        final_entropy=float(ent[-tail:].mean()) if len(ent) else None,
        collapse_step=int(steps[below[0]]) if len(below) else None,
    )


def summarize(
    preset: Preset, histories: dict[str, dict[int, list[dict[str, Any]]]]
) -> list[dict[str, Any]]:
    """One row per configuration: mean and std over seeds of `run_summary`'s statistics."""
    rows = []
    for spec in run_specs(preset):
        per_seed = [run_summary(h, preset.smooth) for h in histories[spec.name].values()]
        row: dict[str, Any] = dataclasses.asdict(spec) | {"seeds": len(per_seed)}
        for key in per_seed[0]:
            if key == "collapse_step":
                continue
            vals = [s[key] for s in per_seed if s[key] is not None]
            row[key] = float(np.mean(vals)) if vals else None
            row[key + "_std"] = float(np.std(vals)) if vals else None
        collapses = [s["collapse_step"] for s in per_seed if s["collapse_step"] is not None]
        row["collapsed_seeds"] = len(collapses)
        row["collapse_step_median"] = float(np.median(collapses)) if collapses else None
        row["per_seed"] = per_seed
        rows.append(row)
    return rows


def _fmt(mean, std=None, digits=2) -> str:
    if mean is None:
        return "-"
    if std is None or not math.isfinite(std) or std == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_markdown(preset: Preset, rows: Sequence[dict[str, Any]]) -> str:
    """The summary table in GitHub markdown."""
    t = preset.train
    lines = [
        f"Preset `{preset.name}`: {t['num_steps']} steps, {len(preset.seeds)} seed(s), "
        f"P={t['prompts_per_step']} prompts x G={t['samples_per_prompt']} samples, "
        f"lr={t['learning_rate']}, stale behaviour refreshed every N={preset.refresh_every} "
        f"steps. Mean ± std over seeds. Train accuracy is that of the behaviour samples; "
        f"held-out accuracy at temperature {t['eval_temperature']} on {t['eval_prompts']} "
        "problems unseen in the warm start.",
        "",
        "| run | N | train acc start | train acc final | train acc peak | held-out final "
        "| held-out peak | entropy start | entropy final | collapsed (seeds, median step) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        collapse = (
            f"{r['collapsed_seeds']}/{r['seeds']} @ {r['collapse_step_median']:.0f}"
            if r["collapsed_seeds"]
            else f"0/{r['seeds']}"
        )
        lines.append(
            f"| {r['label']} | {r['refresh_every']} "
            f"| {_fmt(r['initial_train_acc'], r['initial_train_acc_std'])} "
            f"| {_fmt(r['final_train_acc'], r['final_train_acc_std'])} "
            f"| {_fmt(r['peak_train_acc'], r['peak_train_acc_std'])} "
            f"| {_fmt(r['final_eval_acc'], r['final_eval_acc_std'])} "
            f"| {_fmt(r['peak_eval_acc'], r['peak_eval_acc_std'])} "
            f"| {_fmt(r['initial_entropy'], r['initial_entropy_std'], 3)} "
            f"| {_fmt(r['final_entropy'], r['final_entropy_std'], 3)} "
            f"| {collapse} |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figures

PANELS = (
    ("accuracy", "train accuracy (samples of μ)", True),
    ("eval_accuracy", "held-out accuracy", False),
    ("entropy", "token entropy of π (nats)", True),
)


def _band(
    histories: dict[int, list[dict[str, Any]]],
    key: str,
    smooth: int,
    do_smooth: bool,
    start: float | None = None,
):
    curves = []
    steps = None
    for h in histories.values():
        s, v = _series(h, key)
        if len(v) == 0:
            return None
        if start is not None:  # the warm start's value at step 0
            s, v = np.insert(s, 0, 0.0), np.insert(v, 0, start)
        curves.append(moving_average(v, smooth) if do_smooth else v)
        steps = s if steps is None or len(s) < len(steps) else steps
    n = min(len(c) for c in curves)
    arr = np.stack([c[:n] for c in curves])
    return steps[:n], arr.mean(0), arr.min(0), arr.max(0)


def plot_runs(preset, histories, specs, colors, path, title, styles=None, initial_eval=None):
    """Three panels (train acc, held-out acc, entropy) vs step; mean line, min-max band.

    `initial_eval`: the warm start's held-out accuracy, drawn at step 0."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    for ax, (key, ylabel, do_smooth) in zip(axes, PANELS, strict=True):
        for spec in specs:
            start = initial_eval if key == "eval_accuracy" else None
            band = _band(histories[spec.name], key, preset.smooth, do_smooth, start)
            if band is None:
                continue
            x, mean, lo, hi = band
            ls = (styles or {}).get(spec.name, "-")
            ax.plot(x, mean, ls, color=colors[spec.name], label=spec.label, lw=1.6)
            if len(histories[spec.name]) > 1:
                ax.fill_between(x, lo, hi, color=colors[spec.name], alpha=0.15, lw=0)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if key == "entropy":  # collapse drives it to ~0, a blow-up to several nats
            ax.set_yscale("log", nonpositive="clip")
            ax.set_ylim(bottom=max(ax.get_ylim()[0], 1e-3))
        if do_smooth:
            ax.set_title(f"moving average over {preset.smooth} steps", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def delta_v_colors(specs) -> dict[str, Any]:
    """Blues for delta_v < 0, black for 0, reds for delta_v > 0 (darker = larger |delta_v|)."""
    from matplotlib import colormaps

    neg = sorted({s.delta_v for s in specs if s.delta_v < 0}, reverse=True)
    pos = sorted({s.delta_v for s in specs if s.delta_v > 0})
    shade = lambda i, n: 0.45 + 0.5 * (i + 1) / max(n, 1)
    colors = {}
    for s in specs:
        if s.delta_v < 0:
            colors[s.name] = colormaps["Blues"](shade(neg.index(s.delta_v), len(neg)))
        elif s.delta_v > 0:
            colors[s.name] = colormaps["Reds"](shade(pos.index(s.delta_v), len(pos)))
        else:
            colors[s.name] = "black"
    return colors


def write_report(preset: Preset, histories, out: pathlib.Path) -> dict[str, pathlib.Path]:
    """Figures, summary.md and summary.json under `out`."""
    specs = run_specs(preset)
    rows = summarize(preset, histories)
    (out / "summary.json").write_text(
        json.dumps({"preset": dataclasses.asdict(preset), "rows": rows}, indent=2) + "\n"
    )
    (out / "summary.md").write_text(summary_markdown(preset, rows))
    stale = [s for s in specs if s.loss == "asymre" and s.refresh_every == preset.refresh_every]
    colors = delta_v_colors(stale)
    initial_eval = None
    sft_file = out / "warm_start" / "sft_summary.json"
    if sft_file.is_file():
        initial_eval = json.loads(sft_file.read_text())["accuracy"]
    n = preset.refresh_every
    seeds = len(preset.seeds)
    band = f"mean over {seeds} seeds, band = min-max" if seeds > 1 else "one seed"
    paths = {
        "delta_v": plot_runs(
            preset,
            histories,
            stale,
            colors,
            out / "offpolicy_delta_v.png",
            f"AsymRE with a behaviour policy refreshed every N={n} steps ({band})",
            initial_eval=initial_eval,
        )
    }
    ref = next((s for s in stale if math.isclose(s.delta_v, -0.1)), stale[0])
    grpo = [s for s in specs if s.loss == "grpo"]
    if grpo:
        paths["grpo"] = plot_runs(
            preset,
            histories,
            [ref, *grpo],
            {ref.name: "tab:blue", grpo[0].name: "tab:orange"},
            out / "grpo_vs_asymre.png",
            f"GRPO vs AsymRE δV={ref.delta_v:+.1f}, behaviour refreshed every N={n} steps ({band})",
            initial_eval=initial_eval,
        )
    on_policy = [s for s in specs if s.refresh_every == 1]
    if on_policy:
        same_dv = [s for s in stale if any(math.isclose(s.delta_v, o.delta_v) for o in on_policy)]
        pair = [*same_dv, *on_policy]
        colors3 = delta_v_colors(pair)
        paths["staleness"] = plot_runs(
            preset,
            histories,
            pair,
            colors3,
            out / "staleness.png",
            f"Stale (solid, N={n}) vs on-policy (dashed, N=1) AsymRE ({band})",
            {s.name: "--" for s in on_policy},
            initial_eval=initial_eval,
        )
    return paths


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny-arith", choices=sorted(PRESETS))
    p.add_argument("--quick", action="store_true", help="one seed, fewer steps")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int, default=None, help="override the number of RL steps")
    p.add_argument("--seeds", type=int, default=None, help="override the number of seeds")
    p.add_argument("--refresh-every", type=int, default=None, help="override N (staleness)")
    p.add_argument("--lr", type=float, default=None, help="override the RL learning rate")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    preset = PRESETS[a.preset]
    if a.quick:
        preset = preset.quick()
    train = dict(preset.train)
    if a.steps is not None:
        train["num_steps"] = a.steps
    if a.lr is not None:
        train["learning_rate"] = a.lr
    preset = dataclasses.replace(
        preset,
        train=train,
        seeds=tuple(range(a.seeds)) if a.seeds is not None else preset.seeds,
        refresh_every=a.refresh_every or preset.refresh_every,
    )
    t0 = time.perf_counter()
    run_sweep(preset, a.out, progress=not a.no_progress)
    print((pathlib.Path(a.out) / "summary.md").read_text())
    print(f"sweep done in {time.perf_counter() - t0:.0f} s; outputs in {a.out}")


if __name__ == "__main__":
    main()
