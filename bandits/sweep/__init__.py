"""Sweeps: one jitted, vmapped program over a grid of baselines x learning rates x seeds.

``sweep(problem, V=[...] or delta_v=[...], lr=[...], num_seeds=S, ...)`` runs every cell
of the grid with :func:`bandits.simulator.simulate` semantics in a single XLA program
(``vmap`` over the three axes, compiled once per static configuration). Randomness
(sampled mode) comes from one key per seed:

- ``crn=True`` (common random numbers): every cell with the same seed uses the same key,
  hence the same uniforms, so differences between baselines or learning rates are not
  blurred by sampling noise; the random draw is then computed once per seed and shared
  across the grid, which is also much cheaper.
- ``crn=False`` (independent streams): each cell folds its grid index into its seed's key,
  so no two cells share noise.

Results carry named axes (``dims``, ``coords``) and save to ``.npz`` + a ``.json`` summary.
Command line: ``python -m bandits.sweep --preset paper --out DIR`` (see ``--help``); it runs
``bandits/sweep/__main__.py``, which calls :func:`bandits.cli.main`. The CLI lives apart
because it needs :mod:`bandits.presets`, which is built on this module.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from bandits._checks import as_key, check_positive_int
from bandits.problem import BanditProblem
from bandits.simulator import _check_run, simulate_unchecked

FIELDS = ("final_policy", "expected_reward", "entropy", "support", "behaviour_value", "baseline")


@dataclass
class SweepResult:
    """Arrays with axes ``dims`` = (baseline axis, "lr", "seed", ...) and their coordinates.

    ``data[name]`` has shape ``[len(coords[d]) for d in dims] + per-run shape`` (per-run:
    ``[K]`` for final_policy, ``[T]`` for trajectories, ``[R]`` for per-round values).
    """

    dims: tuple[str, str, str]
    coords: dict[str, np.ndarray]
    data: dict[str, np.ndarray]
    config: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Final expected reward / entropy / support, mean and std over seeds, per cell."""
        base_dim, lr_dim, _ = self.dims
        rows = []
        for i, b in enumerate(self.coords[base_dim]):
            for j, lr in enumerate(self.coords[lr_dim]):
                cell = {k: self.data[k][i, j, :, -1] for k in ("expected_reward", "entropy")}
                support = self.data["support"][i, j, :, -1]
                rows.append(
                    {
                        base_dim: float(b),
                        "lr": float(lr),
                        "final_reward_mean": float(cell["expected_reward"].mean()),
                        "final_reward_std": float(cell["expected_reward"].std()),
                        "final_entropy_mean": float(cell["entropy"].mean()),
                        "final_support_mean": float(support.mean()),
                    }
                )
        return {"dims": list(self.dims), "config": self.config, "cells": rows}

    def save(self, out_dir, name: str) -> tuple[pathlib.Path, pathlib.Path]:
        """Write ``name.npz`` (coords + data) and ``name.json`` (config + summary)."""
        out = pathlib.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        npz_path, json_path = out / f"{name}.npz", out / f"{name}.json"
        arrays = {f"coord_{k}": v for k, v in self.coords.items()} | dict(self.data)
        np.savez_compressed(npz_path, dims=np.array(self.dims), **arrays)
        json_path.write_text(json.dumps(self.summary(), indent=2) + "\n")
        return npz_path, json_path

    @classmethod
    def load(cls, npz_path) -> SweepResult:
        with np.load(npz_path) as f:
            dims = tuple(str(d) for d in f["dims"])
            coords = {d: f[f"coord_{d}"] for d in dims}
            data = {k: f[k] for k in f.files if k in FIELDS}
        json_path = pathlib.Path(npz_path).with_suffix(".json")
        config = json.loads(json_path.read_text())["config"] if json_path.exists() else {}
        return cls(dims, coords, data, config)


def _grid_axis(values, name: str, dtype) -> jax.Array:
    arr = jnp.atleast_1d(jnp.asarray(values, dtype))
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a scalar or a non-empty 1-D sequence, got {arr.shape}")
    if not bool(jnp.all(jnp.isfinite(arr))):
        raise ValueError(f"{name} must be finite")
    return arr


def _shard_grid_axis(bases: jax.Array) -> jax.Array:
    devices = jax.devices()
    num = max(d for d in range(1, len(devices) + 1) if bases.shape[0] % d == 0)
    if num == 1:
        return bases
    mesh = jax.make_mesh((num,), ("grid",), axis_types=(AxisType.Auto,), devices=devices[:num])
    return jax.device_put(bases, NamedSharding(mesh, P("grid")))


def _sweep_program(problem, bases, lrs, seed_keys, init_logits, *, crn, **static):
    def cell(base, lr, key):
        return simulate_unchecked(problem, base, lr, key, init_logits, **static)

    if crn:
        over_seeds = jax.vmap(cell, in_axes=(None, None, 0))
        over_lrs = jax.vmap(over_seeds, in_axes=(None, 0, None))
        return jax.vmap(over_lrs, in_axes=(0, None, None))(bases, lrs, seed_keys)
    num_lrs = lrs.shape[0]

    def independent(i, base, j, lr, key):
        return cell(base, lr, jax.random.fold_in(key, i * num_lrs + j))

    over_seeds = jax.vmap(independent, in_axes=(None, None, None, None, 0))
    over_lrs = jax.vmap(over_seeds, in_axes=(None, None, 0, 0, None))
    over_bases = jax.vmap(over_lrs, in_axes=(0, 0, None, None, None))
    return over_bases(jnp.arange(bases.shape[0]), bases, jnp.arange(num_lrs), lrs, seed_keys)


_sweep_jit = jax.jit(
    _sweep_program,
    static_argnames=("crn", "relative", "steps", "rounds", "batch_size", "baseline", "tol"),
)


def _check_flags(**flags) -> None:
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")


def _init_logits(problem, init_logits) -> jax.Array:
    """``init_logits`` (default ``mu_logits``) as ``[K]`` in the rewards' dtype."""
    if init_logits is None:
        init_logits = problem.mu_logits
    init_logits = jnp.asarray(init_logits, problem.rewards.dtype)
    if init_logits.shape != problem.rewards.shape:
        raise ValueError(f"init_logits must have shape [K] = {problem.rewards.shape}")
    return init_logits


def _config(problem, steps, rounds, batch_size, baseline, crn, seed) -> dict:
    """The run's settings, as saved with a :class:`SweepResult`."""
    return {
        "num_arms": problem.num_arms,
        "noise": problem.noise,
        "noise_std": float(problem.noise_std),
        "behaviour_value_0": float(problem.behaviour_value()),
        "steps_per_round": steps,
        "num_rounds": rounds,
        "batch_size": batch_size,
        "baseline": baseline,
        "crn": crn,
        "seed": seed,
    }


def sweep(
    problem: BanditProblem,
    *,
    V=None,
    delta_v=None,
    lr=1.0,
    num_seeds: int = 1,
    seed: int = 0,
    key=None,
    steps_per_round: int,
    num_rounds: int = 1,
    batch_size: int | None = None,
    baseline: str = "exact",
    crn: bool = True,
    init_logits=None,
    support_tol: float = 1e-6,
    shard: bool = False,
) -> SweepResult:
    """Every (baseline, lr, seed) cell in one jitted vmapped program; see the module doc.

    ``V`` or ``delta_v`` (exactly one) and ``lr`` are scalars or 1-D grids; seeds are
    ``jax.random.split(key or jax.random.key(seed), num_seeds)``. ``shard=True`` splits the
    baseline axis over as many of ``jax.devices()`` as divide its length (on CPU, expose the
    cores as devices with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before jax
    is imported); results are identical, only the placement changes.

    >>> p = BanditProblem([1.0, 0.0], [0.0, 0.0])
    >>> res = sweep(p, V=[-1.0, 0.0], lr=[0.5, 1.0], steps_per_round=10)
    >>> res.dims, res.data["expected_reward"].shape
    (('V', 'lr', 'seed'), (2, 2, 1, 10))
    """
    steps, rounds, batch_size = _check_run(
        problem, V, delta_v, steps_per_round, num_rounds, batch_size, baseline
    )
    num_seeds = check_positive_int(num_seeds, "num_seeds")
    _check_flags(crn=crn, shard=shard)
    dtype = problem.rewards.dtype
    relative = delta_v is not None
    base_dim = "delta_v" if relative else "V"
    bases = _grid_axis(delta_v if relative else V, base_dim, dtype)
    lrs = _grid_axis(lr, "lr", dtype)
    seed_keys = jax.random.split(as_key(jax.random.key(seed) if key is None else key), num_seeds)
    init_logits = _init_logits(problem, init_logits)
    if shard:
        bases = _shard_grid_axis(bases)
    static = dict(relative=relative, steps=steps, rounds=rounds, batch_size=batch_size)
    static |= dict(crn=crn, baseline=baseline, tol=float(support_tol))
    out = _sweep_jit(problem, bases, lrs, seed_keys, init_logits, **static)
    data = {name: np.asarray(getattr(out, name)) for name in FIELDS}
    config = _config(problem, steps, rounds, batch_size, baseline, crn, seed)
    coords = {base_dim: np.asarray(bases), "lr": np.asarray(lrs), "seed": np.arange(num_seeds)}
    return SweepResult((base_dim, "lr", "seed"), coords, data, config)
