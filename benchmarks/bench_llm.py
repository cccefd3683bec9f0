"""LLM benchmarks: asymre-jax (JAX/Flax NNX) against transformers + torch, side by side.

Sections (``--sections``, comma separated):

* ``train``: one training step on the ~5M-parameter "small" Llama of ``llm.models.tiny`` at
  batch 16 x 128 (a 64-token prompt, the loss on the 64 completion slots), float32, same
  weights in both frameworks (the torch model is loaded by transformers from the same
  folder). The ``jax`` row is the trainer's real jitted update,
  ``llm.rl.train_step.step_functions(...).step`` on a ``Batch`` from
  ``llm.rl.batch.build_batch`` (chunked log-probs from the hidden states, entropy, the
  micro-batch scan, clipped AdamW under ``apply_if_finite``), against ``torch`` = forward +
  backward + ``clip_grad_norm_`` + AdamW of the same AsymRE loss. ``jax_value_and_grad``
  (``jax.jit(jax.value_and_grad)`` from full logits), ``jax_naive_nnx`` (the same through
  ``nnx.jit`` + ``nnx.value_and_grad``) and ``torch_grad_only`` time the gradient alone.
* ``generate``: ``llm.generate`` against ``transformers`` ``generate`` at batch 32, prompt
  64, 64 new tokens (no EOS stop), greedy and sampled (temperature 1, top-p 0.9, top-k off).
* ``memory``: peak host RSS of ``load_hf`` on a ~0.5B-parameter bf16 checkpoint
  (``llm.models.tiny`` size "0.5b", random weights, built locally once), measured in a fresh
  subprocess and compared with the weights' byte size (``bench_llm_memory.py``).

Every timing blocks until ready; the first call (compile + run) is reported apart; steps
then alternate between the two frameworks so both see the same machine load, and the
minimum and median over ``--repeats`` are reported. torch runs with ``--threads`` threads
(XLA's CPU client uses the cores it finds). Example::

    python benchmarks/bench_llm.py --sections train,generate,memory --repeats 5

The markdown tables (printed last, or alone with ``--from-json``) come from
``bench_llm_report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import tempfile
import time

from bench_llm_memory import bench_memory  # sibling script modules
from bench_llm_report import markdown

SMALL_FAMILY = "llama"


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _stats(times):
    import numpy as np

    times = np.asarray(times)
    return {"min_s": float(times.min()), "median_s": float(np.median(times))}


def _alternate(fns: dict, repeats: int) -> dict:
    """Time each callable ``repeats`` times, interleaved; returns {name: stats}."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_timed(fn)[0])
    return {name: _stats(t) for name, t in times.items()}


def small_checkpoint(workdir: pathlib.Path) -> pathlib.Path:
    from llm.models.tiny import make_tiny_checkpoint

    path = workdir / f"small_{SMALL_FAMILY}"
    if not (path / "config.json").exists():
        make_tiny_checkpoint(path, family=SMALL_FAMILY, size="small", seed=0)
    return path


# -------------------------------------------------------------------------- train ----


def trainer_update(model, batch: int, prompt_len: int, new_tokens: int, **kwargs) -> dict:
    """The trainer's real jitted update on random sequences: a dict with ``run`` (one step,
    blocked; params and optimizer state carried over, as in training), the host ``batch``
    and its ``tokens_BxS``.

    ``llm.rl.train_step.step_functions`` without a mesh (AsymRE loss: chunked log-probs of
    the ``new_tokens`` completion slots from the final hidden states, entropy, the
    micro-batch ``lax.scan``, global-norm clipping + AdamW under ``apply_if_finite``) on a
    `Batch` from ``llm.rl.batch.build_batch``. ``kwargs``: ``micro_batches`` (1),
    ``chunk_size`` (128), ``learning_rate`` (1e-5), ``seed`` (0).
    """
    import jax
    import numpy as np
    from flax import nnx

    from llm.rl.batch import build_batch
    from llm.rl.losses import AsymRE
    from llm.rl.optimizer import hyperparams
    from llm.rl.train_step import step_functions

    micro_batches, chunk = kwargs.get("micro_batches", 1), kwargs.get("chunk_size", 128)
    rng = np.random.default_rng(kwargs.get("seed", 0))
    vocab = model.config.vocab_size
    tokens_BxS = rng.integers(3, vocab, (batch, prompt_len + new_tokens)).astype(np.int32)
    host = build_batch(
        [row[:prompt_len].tolist() for row in tokens_BxS],
        tokens_BxS[:, prompt_len:],
        np.full(batch, new_tokens),
        rng.standard_normal(batch).astype(np.float32),
        pad_token_id=0,
        micro_batches=micro_batches,
    )
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    fns = step_functions(graphdef, params, loss_fn=AsymRE(), chunk_size=chunk)
    device_batch = jax.device_put(host)
    hyper = hyperparams(kwargs.get("learning_rate", 1e-5), 0.0, 1.0)
    carry = {"params": fns.copy(params)}  # the step donates its params: not the model's
    carry["opt"] = fns.init_opt(carry["params"])

    def run():
        p, o, metrics = fns.step(carry["params"], carry["opt"], device_batch, hyper, {})
        carry["params"], carry["opt"] = p, o
        return jax.block_until_ready(metrics)

    return {"run": run, "batch": host, "tokens_BxS": tokens_BxS, "params": params}


def _torch_update(path, tokens, mask, advantages, new: int):
    """transformers' model of ``path``: ``step(update=True)`` = forward + backward of the
    AsymRE loss on the last ``new`` slots, then ``clip_grad_norm_`` + AdamW (``update=False``:
    the gradient only); returns the detached loss."""
    import torch
    import transformers

    reference = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-5, weight_decay=0.0)
    tokens_t = torch.tensor(tokens, dtype=torch.long)
    advantages_t, mask_t = torch.tensor(advantages), torch.tensor(mask)

    def step(update=True):
        logits = reference(input_ids=tokens_t).logits[:, -new - 1 : -1].float()
        logprobs = torch.log_softmax(logits, -1).gather(-1, tokens_t[:, -new:, None])[..., 0]
        loss = -(advantages_t * (logprobs * mask_t).sum(1)).mean()
        loss.backward()
        if update:
            torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def bench_train(workdir, batch: int, length: int, repeats: int) -> dict:
    """The trainer's update against torch fwd + bwd + clip + AdamW of the same loss.

    Sequences are ``length`` tokens: a prompt of ``length // 2`` and ``length // 2``
    completion slots carrying the loss (as in an RL step). Rows: ``jax`` = the real update
    (`trainer_update`); ``jax_value_and_grad`` = ``jax.jit(jax.value_and_grad)`` of the same
    loss from full logits (gradient only); ``jax_naive_nnx`` = the latter through
    ``nnx.jit`` + ``nnx.value_and_grad``; ``torch`` = transformers forward + backward +
    ``clip_grad_norm_`` + ``torch.optim.AdamW`` (the update's work); ``torch_grad_only`` =
    forward + backward.
    """
    import jax
    import numpy as np
    from flax import nnx

    from asymre_jax import asymre_loss, token_logprobs
    from llm.models.hf_io import load_hf

    path = small_checkpoint(workdir)
    model, config = load_hf(path, dtype="float32")
    new = length // 2
    real = trainer_update(model, batch, length - new, new)
    tokens = real["tokens_BxS"]
    advantages = real["batch"].advantages.reshape(-1)
    mask = np.ones((batch, new), np.float32)
    graphdef, state = nnx.split(model)
    num_params = sum(x.size for x in jax.tree.leaves(state))

    def loss_of_model(model, tokens_BxT, mask_BxN, advantages_B):
        logits_BxNxV = model(tokens_BxT)[:, -new - 1 : -1]
        logprobs_BxN = token_logprobs(logits_BxNxV, tokens_BxT[:, -new:])
        return asymre_loss(logprobs_BxN, advantages_B, mask_BxN)

    plain = jax.jit(jax.value_and_grad(lambda s, *a: loss_of_model(nnx.merge(graphdef, s), *a)))
    naive = nnx.jit(lambda m, *a: nnx.value_and_grad(loss_of_model)(m, *a))

    torch_step = _torch_update(path, tokens, mask, advantages, new)
    fns = {
        "jax": real["run"],
        "jax_value_and_grad": lambda: jax.block_until_ready(plain(state, tokens, mask, advantages)),
        "jax_naive_nnx": lambda: jax.block_until_ready(naive(model, tokens, mask, advantages)),
        "torch": torch_step,
        "torch_grad_only": lambda: torch_step(update=False),
    }
    loss_jax = float(fns["jax_value_and_grad"]()[0])
    loss_torch = float(torch_step(update=False))
    first, loss_update = {}, None
    for name, fn in fns.items():
        first[name], out = _timed(fn)
        if name == "jax":  # the update's loss at the initial params
            loss_update = float(out["loss"])
    steady = _alternate(fns, repeats)
    tokens_per_step = batch * length
    out = {
        "params": int(num_params),
        "batch": batch,
        "length": length,
        "loss_slots": new,
        "loss_jax": loss_jax,
        "loss_torch": loss_torch,
        "loss_jax_update": loss_update,
    }
    for name, s in steady.items():
        out[name] = {
            **s,
            "first_call_s": first[name],
            "tokens_per_s_median": tokens_per_step / s["median_s"],
            "tokens_per_s_best": tokens_per_step / s["min_s"],
        }
    out["speedup_vs_torch_median"] = steady["torch"]["median_s"] / steady["jax"]["median_s"]
    out["speedup_vs_torch_best"] = steady["torch"]["min_s"] / steady["jax"]["min_s"]
    return out


# ----------------------------------------------------------------------- generate ----


def bench_generate(workdir, batch: int, prompt_len: int, new: int, repeats: int) -> dict:
    import jax
    import numpy as np
    import torch
    import transformers

    from llm.models.hf_io import load_hf
    from llm.sampler import generate

    path = small_checkpoint(workdir)
    model, config = load_hf(path, dtype="float32")
    rng = np.random.default_rng(1)
    prompts_BxT = rng.integers(3, config.vocab_size, (batch, prompt_len))
    prompts = prompts_BxT.tolist()
    reference = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    reference.generation_config.eos_token_id = None
    reference.generation_config.pad_token_id = 0
    input_ids = torch.tensor(prompts_BxT, dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)

    modes = {
        "greedy": ({"temperature": 0.0}, {"do_sample": False}),
        "sampled": (
            {"temperature": 1.0, "top_p": 0.9, "top_k": 0},
            {"do_sample": True, "temperature": 1.0, "top_p": 0.9, "top_k": 0},
        ),
    }
    results = {"batch": batch, "prompt_len": prompt_len, "new_tokens": new}
    for mode, (jax_kwargs, hf_kwargs) in modes.items():
        calls = [0]

        def run_jax(jax_kwargs=jax_kwargs, calls=calls):
            calls[0] += 1
            out = generate(
                model, prompts, max_new_tokens=new, key=jax.random.key(calls[0]), **jax_kwargs
            )
            return jax.block_until_ready(out)

        def run_torch(hf_kwargs=hf_kwargs):
            with torch.no_grad():
                return reference.generate(
                    input_ids, attention_mask=attention_mask, max_new_tokens=new, **hf_kwargs
                )

        first = {"jax": _timed(run_jax)[0], "torch": _timed(run_torch)[0]}
        assert int(np.asarray(run_jax().lengths).min()) == new
        assert run_torch().shape == (batch, prompt_len + new)
        steady = _alternate({"jax": run_jax, "torch": run_torch}, repeats)
        entry = {}
        for name, s in steady.items():
            entry[name] = {
                **s,
                "first_call_s": first[name],
                "tokens_per_s_median": batch * new / s["median_s"],
                "tokens_per_s_best": batch * new / s["min_s"],
            }
        entry["speedup_vs_torch_median"] = steady["torch"]["median_s"] / steady["jax"]["median_s"]
        entry["speedup_vs_torch_best"] = steady["torch"]["min_s"] / steady["jax"]["min_s"]
        results[mode] = entry
    return results


# ---------------------------------------------------------------------------- CLI ----


def machine() -> dict:
    import jax
    import torch

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "jax_device": str(jax.devices()[0].device_kind),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "loadavg_start": os.getloadavg(),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default="train,generate,memory")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch intra-op threads; 1 also turns XLA's multi-threaded Eigen off, so both "
        "frameworks run single-threaded (fairer on a machine shared with other jobs)",
    )
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-length", type=int, default=128)
    parser.add_argument("--gen-batch", type=int, default=32)
    parser.add_argument("--gen-prompt", type=int, default=64)
    parser.add_argument("--gen-new", type=int, default=64)
    parser.add_argument("--workdir", default=None, help="where checkpoints are built (cached)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--from-json", default=None, help="only print the markdown of a run")
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(pathlib.Path(args.from_json).read_text())
        print(markdown(results))
        return results

    if args.threads == 1:  # before jax is imported
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    from llm.compile_cache import enable_compilation_cache

    enable_compilation_cache()
    import torch

    torch.set_num_threads(args.threads)
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench_llm_"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine()}
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for section in sections:
        if section == "train":
            results["train"] = bench_train(
                workdir, args.train_batch, args.train_length, args.repeats
            )
        elif section == "generate":
            results["generate"] = bench_generate(
                workdir, args.gen_batch, args.gen_prompt, args.gen_new, args.repeats
            )
        elif section == "memory":
            results["memory"] = bench_memory(workdir)
        else:
            parser.error(f"unknown section {section!r}; choose from train, generate, memory")
        print(json.dumps({section: results[section]}, indent=1), flush=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["machine"]["peak_rss_bench_process"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
