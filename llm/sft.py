"""Supervised warm start on the synthetic arithmetic task (teacher-forced cross-entropy).

Each training sequence is the rendered prompt x (chat template of the tiny tokenizer, see
`arithmetic_renderer`) followed by the completion y = answer + EOS; the loss is the
mean negative log-likelihood of the completion tokens only,

    L(theta) = - (1 / sum_i |y_i|) * sum_i sum_t log pi_theta(y_it | x_i, y_i,<t),

minimised in a jitted, pure step over (params, optimizer state) with the RL trainer's
optimizer (`llm.rl.optimizer.make_optimizer`: clipped AdamW, the learning rate a traced input
set with `optax.tree_utils.tree_set`, so nothing here depends on how optax nests its state).
Prompts are rendered by `llm.data.prompts.PromptRenderer` and every `eval_every` steps the
accuracy of the model's own completions on held-out problems is measured by
`llm.rl.evaluation.evaluate` (temperature 1, the sampling the RL trainer uses, and greedy);
training stops at the first evaluation whose temperature-1 accuracy reaches
`target_accuracy` (or after `max_steps`). The result is saved with `save_hf` (weights,
config, tokenizer) so that every RL run starts from the very same weights, with
`sft_summary.json` beside it.

    python -m llm.sft --out runs/warm_start            # tiny-arith defaults
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from asymre_jax import token_logprobs
from llm.data.arithmetic import make_arithmetic_examples
from llm.data.examples import Example
from llm.data.prompts import PromptRenderer
from llm.data.rewards import VerifiableReward, arithmetic_reward
from llm.data.tokenizer import byte_level_tokenizer, load_tokenizer
from llm.models.hf_io import load_hf, save_hf
from llm.models.tiny import tiny_config
from llm.models.transformer import Transformer
from llm.rl import Sampling, evaluate, hyperparams, make_optimizer

# The tiny-arith model: 869,504 parameters (llama family, byte-level tokenizer of llm.models.tiny).
TINY_ARITH_MODEL = dict(
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    intermediate_size=384,
)
# a+b with 1-2 digit operands: a short warm start learns it only partly.
TINY_ARITH_TASK = dict(num_operands=2, digits=(1, 2), operators="+")


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """Warm start settings. `base_path` (an HF folder) or a fresh tiny llama of `model`."""

    out_dir: str = "runs/warm_start"
    base_path: str | None = None
    model: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(TINY_ARITH_MODEL))
    task_kwargs: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(TINY_ARITH_TASK))
    num_train_examples: int = 20000
    num_eval_examples: int = 256
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    max_steps: int = 3000
    eval_every: int = 50
    target_accuracy: float = 0.35
    max_new_tokens: int = 6
    seed: int = 0
    progress: bool = True


# ----------------------------------------------------------------------------- data


def arithmetic_renderer(tokenizer) -> PromptRenderer:
    """Prompts of the tiny-arith task: the chat template, the bare expression as user turn."""
    return PromptRenderer(tokenizer, chat=True, instruction="")


def completion_ids(tokenizer, answer: str) -> list[int]:
    """The target completion: the answer's tokens, then EOS."""
    return [*tokenizer.encode(answer, add_special_tokens=False), tokenizer.eos_token_id]


def sft_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], length: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded [B, length] ids of prompt + completion and the [B, length - 1] 0/1 mask of
    the next-token targets that belong to the completion."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    tokens_BxT = np.full((len(prompts), length), pad_id, np.int32)
    mask_BxT = np.zeros((len(prompts), length - 1), np.float32)
    for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        if len(p) + len(c) > length:
            raise ValueError(f"row {b}: prompt + completion has {len(p) + len(c)} > {length} ids")
        tokens_BxT[b, : len(p) + len(c)] = [*p, *c]
        mask_BxT[b, len(p) - 1 : len(p) + len(c) - 1] = 1.0  # target t+1 predicted at t
    return tokens_BxT, mask_BxT


# ----------------------------------------------------------------------------- step


def sft_loss(graphdef: nnx.GraphDef, params: nnx.State, tokens_BxT, mask_BxTm1) -> jax.Array:
    """Mean cross-entropy of the masked next-token targets."""
    model = nnx.merge(graphdef, params)
    logits_BxTm1xV = model(tokens_BxT[:, :-1])
    logp_BxTm1 = token_logprobs(logits_BxTm1xV, tokens_BxT[:, 1:])
    return -(logp_BxTm1 * mask_BxTm1).sum() / jnp.maximum(mask_BxTm1.sum(), 1.0)


@functools.partial(jax.jit, static_argnames=("graphdef", "tx"), donate_argnums=(1, 2))
def sft_step(graphdef, params, opt_state, tokens_BxT, mask_BxTm1, hyper, *, tx):
    """One optimizer step of ``make_optimizer``: (params, opt_state, loss).

    ``hyper`` (`hyperparams`: learning_rate, weight_decay, max_grad_norm) replaces the injected
    hyperparameters wherever ``tx`` keeps them (`optax.tree_utils.tree_set`)."""
    loss, grads = jax.value_and_grad(sft_loss, argnums=1)(graphdef, params, tokens_BxT, mask_BxTm1)
    opt_state = optax.tree_utils.tree_set(opt_state, **hyper)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def arithmetic_accuracy(graphdef, params, renderer, examples, *, key, max_new_tokens: int):
    """(temperature-1 accuracy, greedy accuracy) on ``examples`` (`llm.rl.evaluation`)."""
    reward = VerifiableReward(arithmetic_reward, scale="01")
    tokenizer = renderer.tokenizer
    sampling = Sampling(max_new_tokens, 1.0, 1.0, tokenizer.eos_token_id, tokenizer.pad_token_id)
    metrics = evaluate(graphdef, params, examples, renderer, reward, key=key, sampling=sampling)
    return metrics["eval_accuracy"], metrics["eval_greedy_accuracy"]


# ----------------------------------------------------------------------------- driver


def _initial_model(cfg: SFTConfig):
    if cfg.base_path is not None:
        model, config = load_hf(cfg.base_path)
        return model, config, load_tokenizer(cfg.base_path)
    config = tiny_config("llama", "tiny", **cfg.model)
    model = Transformer(config, rngs=nnx.Rngs(cfg.seed))
    return model, config, byte_level_tokenizer(config.vocab_size)


def _problems(cfg: SFTConfig, held_out, exclude, train) -> tuple[list, list]:
    """(held-out problems, training problems without any held-out or excluded prompt)."""
    if held_out is None:
        held_out = make_arithmetic_examples(
            cfg.num_eval_examples, seed=cfg.seed + 10_000, **cfg.task_kwargs
        )
    unseen = {ex.prompt for ex in held_out} | set(exclude)
    if train is None:
        train = make_arithmetic_examples(cfg.num_train_examples, seed=cfg.seed, **cfg.task_kwargs)
    train = [ex for ex in train if ex.prompt not in unseen]
    if not train:
        raise ValueError("every training problem is excluded; raise num_train_examples")
    return list(held_out), train


def _check_config(cfg: SFTConfig) -> None:
    if not 0.0 < cfg.target_accuracy <= 1.0:
        raise ValueError(f"target_accuracy must be in (0, 1], got {cfg.target_accuracy}")
    if cfg.batch_size < 1 or cfg.max_steps < 1 or cfg.eval_every < 1:
        raise ValueError("batch_size, max_steps and eval_every must be >= 1")


def train_sft(
    cfg: SFTConfig, graphdef, params, renderer: PromptRenderer, train, held_out, *, pad_id: int
):
    """SFT steps on ``train`` until an evaluation on ``held_out`` reaches the target accuracy
    (or `max_steps`); returns (params, history: one row per evaluation, the last one final).
    ``pad_id`` fills the batch after each sequence (masked out of the loss)."""
    tokenizer = renderer.tokenizer
    prompts = renderer.repeat(train, 1)
    completions = [completion_ids(tokenizer, ex.answer) for ex in train]
    length = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
    schedule = optax.warmup_constant_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1))
    tx = make_optimizer()
    opt_state = tx.init(params)
    rng, key = np.random.default_rng(cfg.seed), jax.random.key(cfg.seed)
    history = []
    bar = tqdm(total=cfg.max_steps, desc="sft", disable=not cfg.progress)
    for step in range(1, cfg.max_steps + 1):
        idx = rng.integers(0, len(train), cfg.batch_size)
        tokens, mask = sft_batch(
            [prompts[i] for i in idx], [completions[i] for i in idx], length, pad_id
        )
        hyper = hyperparams(float(schedule(step - 1)), cfg.weight_decay, 1.0)
        params, opt_state, loss = sft_step(graphdef, params, opt_state, tokens, mask, hyper, tx=tx)
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            acc, greedy = arithmetic_accuracy(
                graphdef,
                params,
                renderer,
                held_out,
                key=jax.random.fold_in(key, step),
                max_new_tokens=cfg.max_new_tokens,
            )
            history.append(dict(step=step, loss=float(loss), accuracy=acc, greedy_accuracy=greedy))
            bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{acc:.2f}", greedy=f"{greedy:.2f}")
            if acc >= cfg.target_accuracy:
                break
    bar.close()
    return params, history


def run_sft(
    cfg: SFTConfig,
    *,
    held_out: Sequence[Example] | None = None,
    exclude: Sequence[str] = (),
    train: Sequence[Example] | None = None,
) -> dict[str, Any]:
    """Warm-start a model on arithmetic; save it to `cfg.out_dir`; return the summary dict.

    `held_out`: the problems whose accuracy decides when to stop (default: `num_eval_examples`
    fresh ones); `exclude`: prompts never trained on (pass the RL held-out prompts so that
    they stay unseen); `train`: the training problems (default: `num_train_examples` drawn
    from `cfg.seed`). Training problems that appear in `held_out` or `exclude` are dropped.
    """
    _check_config(cfg)
    model, config, tokenizer = _initial_model(cfg)
    graphdef, params = nnx.split(model)
    held_out, train = _problems(cfg, held_out, exclude, train)
    start = time.perf_counter()
    renderer = arithmetic_renderer(tokenizer)
    params, history = train_sft(
        cfg, graphdef, params, renderer, train, held_out, pad_id=config.pad_token_id
    )
    out = pathlib.Path(cfg.out_dir)
    save_hf(nnx.merge(graphdef, params), config, out, tokenizer=tokenizer)
    last = history[-1]
    summary = dict(
        steps=last["step"],
        num_train_problems=len({ex.prompt for ex in train}),
        num_held_out=len(held_out),
        reached_target=bool(last["accuracy"] >= cfg.target_accuracy),
        accuracy=last["accuracy"],
        greedy_accuracy=last["greedy_accuracy"],
        loss=last["loss"],
        seconds=time.perf_counter() - start,
        num_params=int(sum(x.size for x in jax.tree.leaves(params))),
        config=dataclasses.asdict(cfg),
        history=history,
    )
    (out / "sft_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=SFTConfig.out_dir)
    p.add_argument("--base-path", default=None, help="start from this HF folder")
    p.add_argument("--target-accuracy", type=float, default=SFTConfig.target_accuracy)
    p.add_argument("--max-steps", type=int, default=SFTConfig.max_steps)
    p.add_argument("--learning-rate", type=float, default=SFTConfig.learning_rate)
    p.add_argument("--batch-size", type=int, default=SFTConfig.batch_size)
    p.add_argument("--eval-every", type=int, default=SFTConfig.eval_every)
    p.add_argument("--seed", type=int, default=SFTConfig.seed)
    a = p.parse_args(argv)
    summary = run_sft(
        SFTConfig(
            out_dir=a.out,
            base_path=a.base_path,
            target_accuracy=a.target_accuracy,
            max_steps=a.max_steps,
            learning_rate=a.learning_rate,
            batch_size=a.batch_size,
            eval_every=a.eval_every,
            seed=a.seed,
        )
    )
    print(json.dumps({k: v for k, v in summary.items() if k not in ("history", "config")}))


if __name__ == "__main__":
    main()
