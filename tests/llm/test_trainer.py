"""train() end to end in-process on a tiny random model (CPU, one device, shared shapes so
the step compiles once for the whole module)."""

import json
import logging

import jax
import numpy as np
import pytest

from llm.data.datasets import BatchIterator, Example, make_arithmetic_examples
from llm.data.verifiable import correctness
from llm.models.tiny import make_tiny_checkpoint
from llm.rl import (
    eval_key,
    evaluate,
    init_run,
    refresh_behaviour,
    rollout,
    step_key,
    update,
)
from llm.rl.losses import LOSSES, AsymRE
from llm.rl.metrics import read_metrics, sample_stats
from llm.rl.schedule import learning_rate_fn
from llm.rl.step import TIMING_KEYS
from llm.trainer import TrainConfig, train

LETTERS = set("abcdefghijklmnopqrstuvwxyz")


def letter_reward(prompts, completions, answer, **columns):
    """+1 when the completion starts with a lowercase letter: learnable from scratch."""
    return [1.0 if c[:1] in LETTERS else -1.0 for c in completions]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "qwen2", "qwen2"))


def _cfg(model_path, tmp_path, **kw):
    base = dict(
        model_path=model_path,
        task="arithmetic",
        task_kwargs={"num_examples": 64},
        num_steps=4,
        prompts_per_step=4,
        samples_per_prompt=4,
        max_new_tokens=6,
        learning_rate=1e-2,
        eval_prompts=0,
        mesh="fsdp=1",
        mesh_subset=True,
        out_dir=str(tmp_path / "run"),
        progress=False,
        tensorboard=False,
    )
    return TrainConfig(**(base | kw))


def test_learnable_reward_goes_up(model_path, tmp_path):
    history = train(
        _cfg(model_path, tmp_path, num_steps=10, refresh_every=1), reward_fn=letter_reward
    )
    rewards = [row["reward_mean"] for row in history]
    first, last = np.mean(rewards[:3]), np.mean(rewards[-3:])
    assert last > first + 0.3, rewards
    # the jsonl holds the same rows
    assert [r["reward_mean"] for r in read_metrics(tmp_path / "run")] == rewards


def test_behaviour_params_refresh_and_stay_frozen(model_path, tmp_path):
    seen = []

    def record(step, params, behaviour, row):
        leaf = lambda tree: np.asarray(tree["layers"][0]["mlp"]["up"]).copy()
        seen.append((step, leaf(params), leaf(behaviour), row))

    train(
        _cfg(model_path, tmp_path, num_steps=7, refresh_every=3),
        reward_fn=letter_reward,
        callback=record,
    )
    assert [s for s, *_ in seen] == list(range(7))
    for step, params, behaviour, row in seen:
        assert not np.array_equal(params, behaviour)  # params moved past mu this step
        prev_params, prev_behaviour = (
            (seen[step - 1][1], seen[step - 1][2]) if step else (None,) * 2
        )
        if step % 3 == 0:
            if step:  # refresh: mu = the trained params at the start of this step
                np.testing.assert_array_equal(behaviour, prev_params)
            assert row["logratio_abs"] < 1e-6
            assert row["behaviour_age"] == 0
        else:  # frozen until the next refresh
            np.testing.assert_array_equal(behaviour, prev_behaviour)
            assert row["logratio_abs"] > 1e-5
            assert row["behaviour_age"] == step % 3


def test_refresh_every_one_is_on_policy(model_path, tmp_path):
    history = train(_cfg(model_path, tmp_path, refresh_every=1), reward_fn=letter_reward)
    for row in history:
        assert row["logratio_abs"] < 1e-6
        assert abs(row["ratio_mean"] - 1.0) < 1e-5
        for key in (
            "reward_std",
            "zero_variance_groups",
            "adv_mean",
            "adv_std",
            "entropy",
            "completion_len",
            "truncated_frac",
            "grad_norm",
            "lr",
            "tokens_per_s",
        ):
            assert np.isfinite(row[key]), key


def test_second_run_does_not_recompile(model_path, tmp_path, count_compiles):
    """A second train() in the process with an equal model and loss (another seed, learning
    rate and delta_v: a sweep) compiles nothing: it reuses the step, the sampler, the rest."""
    train(_cfg(model_path, tmp_path, num_steps=1), reward_fn=letter_reward)
    count_compiles.clear()
    train(
        _cfg(
            model_path,
            tmp_path,
            num_steps=2,
            learning_rate=3e-3,
            delta_v=-0.3,
            seed=5,
            out_dir=str(tmp_path / "second"),
        ),
        reward_fn=letter_reward,
    )
    assert not count_compiles, count_compiles


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_non_finite_updates_are_skipped_then_stop(model_path, tmp_path):
    def overflowing(prompts, completions, answer, **columns):
        # finite rewards whose advantages overflow the float32 loss
        return [3e38 * (-1) ** i for i in range(len(completions))]

    cfg = _cfg(model_path, tmp_path, max_nonfinite_steps=2, checkpoint_every=1, num_steps=5)
    with pytest.raises(FloatingPointError, match="2 non-finite steps in a row"):
        train(cfg, reward_fn=overflowing)
    rows = read_metrics(tmp_path / "run")
    assert [r["skipped"] for r in rows] == [1, 1]
    # the checkpoint written after the first skipped step holds the initial, finite weights
    from llm.rl.checkpoint import Checkpointer

    ckpt = Checkpointer(tmp_path / "run" / "checkpoints")
    assert ckpt.all_steps() == [1]
    ckpt.close()
    meta = json.loads((tmp_path / "run" / "checkpoints" / "1" / "meta" / "metadata").read_text())
    assert meta["step"] == 1


def test_bad_config_is_rejected(model_path, tmp_path):
    with pytest.raises(ValueError, match="samples_per_prompt"):
        train(_cfg(model_path, tmp_path, samples_per_prompt=1))
    with pytest.raises(ValueError, match="micro_batches"):
        train(_cfg(model_path, tmp_path, micro_batches=3))
    with pytest.raises(ValueError, match="loss"):
        train(_cfg(model_path, tmp_path, loss="ppo"))
    with pytest.raises(ValueError, match="learner_distribution.*grpo"):
        train(_cfg(model_path, tmp_path, loss="grpo", learner_distribution="model"))
    assert jax.device_count() == 8


@pytest.mark.slow
def test_grpo_comparator_runs_off_policy(model_path, tmp_path):
    history = train(
        _cfg(model_path, tmp_path, loss="grpo", num_steps=3, refresh_every=3),
        reward_fn=letter_reward,
    )
    assert [r["behaviour_age"] for r in history] == [0, 1, 2]
    assert history[0]["logratio_abs"] < 1e-6 < history[2]["logratio_abs"]
    for row in history:
        assert row["skipped"] == 0 and np.isfinite(row["loss"]) and row["ratio_max"] > 0
        # GRPO advantages are group-normalised: zero mean within each prompt's group
        assert abs(row["adv_mean"]) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["cispo", "topr"])
def test_off_policy_relatives_train(model_path, tmp_path, loss):
    """CISPO and TOPR from the config, off-policy (mu refreshed every 3 steps): finite
    updates that move pi away from mu."""
    history = train(
        _cfg(model_path, tmp_path, loss=loss, num_steps=3, refresh_every=3),
        reward_fn=letter_reward,
    )
    assert history[0]["logratio_abs"] < 1e-6 < history[2]["logratio_abs"]
    assert all(r["skipped"] == 0 and np.isfinite(r["loss"]) for r in history)


def plain_asymre(logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN):
    """A user loss with the per-token contract (no .advantages: AsymRE's are used; no
    .normalization: "sequence" weights)."""
    return -(w_BxN * adv_BxN * logprobs_BxN).sum()


@pytest.mark.slow
@pytest.mark.parametrize("loss_fn", [AsymRE(delta_v=-0.1), plain_asymre])
def test_loss_plugin_matches_the_configured_loss(model_path, tmp_path, loss_fn):
    runs = []
    for plugin in (None, loss_fn):
        _, state = train(
            _cfg(model_path, tmp_path / str(plugin is None), num_steps=2, refresh_every=2),
            reward_fn=letter_reward,
            loss_fn=plugin,
            return_state=True,
        )
        runs.append(jax.tree.map(np.asarray, state.params))
    for a, b in zip(*(jax.tree.leaves(r) for r in runs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_custom_reward_without_levels_reports_no_accuracy(model_path, tmp_path):
    def graded(prompts, completions, answer, **columns):
        return [0.3 * len(c) for c in completions]

    history = train(_cfg(model_path, tmp_path, num_steps=1, eval_prompts=4), reward_fn=graded)
    assert "accuracy" not in history[0] and "eval_greedy_accuracy" not in history[0]
    assert np.isfinite(history[0]["eval_greedy_reward"])


@pytest.mark.slow
def test_dataset_and_eval_dataset_replace_the_task(model_path, tmp_path):
    data = [{"prompt": f"{i}+{i}=", "answer": str(2 * i)} for i in range(8)]
    history = train(
        _cfg(model_path, tmp_path, num_steps=2, eval_prompts=3),
        dataset=data,
        eval_dataset=[Example("1+1=", "2")],
    )
    assert len(history) == 2 and "eval_greedy_accuracy" in history[-1]
    with pytest.raises(TypeError, match=r"dataset\[0\]"):
        train(_cfg(model_path, tmp_path), dataset=["not an example"])


def _on_policy_row(model_path, tmp_path, **kw):
    (row,) = train(_cfg(model_path, tmp_path, num_steps=1, **kw), reward_fn=letter_reward)
    return row


@pytest.mark.slow
def test_on_policy_grpo_ratio_is_one_under_temperature_and_nucleus(model_path, tmp_path):
    """The learner scores pi with the sampler's transform: on-policy pi/mu = 1 to rounding
    at T = 0.7, top_p = 0.9 (no token outside pi's own nucleus)."""
    row = _on_policy_row(model_path, tmp_path, loss="grpo", temperature=0.7, top_p=0.9)
    assert row["logratio_abs"] < 1e-5 and row["outside_nucleus"] == 0.0
    assert abs(row["ratio_mean"] - 1) < 1e-5 and row["ratio_max"] < 1 + 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("top_p", [1.0, 0.9])
@pytest.mark.parametrize("loss", LOSSES)
def test_on_policy_ratio_is_one_for_every_loss(model_path, tmp_path, loss, top_p):
    row = _on_policy_row(model_path, tmp_path, loss=loss, temperature=0.7, top_p=top_p)
    assert row["logratio_abs"] < 1e-5 and abs(row["ratio_mean"] - 1) < 1e-5, row


@pytest.mark.slow
def test_asymre_under_the_model_distribution_sees_the_temperature(model_path, tmp_path):
    """learner_distribution="model" scores log pi at T = 1: on-policy at T = 0.5 the drift
    metrics then measure the temperature, not staleness (the documented trade)."""
    kw = dict(loss="asymre", temperature=0.5)
    assert _on_policy_row(model_path, tmp_path / "s", **kw)["logratio_abs"] < 1e-5
    model = _on_policy_row(model_path, tmp_path / "m", learner_distribution="model", **kw)
    assert model["logratio_abs"] > 1e-2


def test_no_compilation_after_the_first_step(model_path, tmp_path, caplog):
    """Steps 1.. reuse everything step 0 compiled (sampler, update, copies), with a refresh
    at step 2 and a changing learning rate (warmup)."""
    compiled_at = {}
    step = {"now": -1}

    def mark(s, params, behaviour, row):
        step["now"] = s + 1

    class Count(logging.Handler):
        def emit(self, record):
            if "Compiling" in record.getMessage() or "compiling" in record.getMessage():
                compiled_at[step["now"]] = compiled_at.get(step["now"], 0) + 1

    handler = Count(level=logging.DEBUG)
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles(True):
            jax.jit(lambda x: x * 2.0 + 1.0)(np.arange(7.0))  # proves the counter works
            step["now"] = 0
            train(
                _cfg(model_path, tmp_path, num_steps=5, refresh_every=2, warmup_steps=3, seed=11),
                reward_fn=letter_reward,
                callback=mark,
            )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert compiled_at.get(-1, 0) >= 1  # the counter sees a compilation
    assert set(compiled_at) <= {-1, 0}, compiled_at


def test_callback_extends_the_row_and_stops_the_run_with_checkpoint_and_export(
    model_path, tmp_path
):
    seen_evals = []

    def every_other(setup, state):
        seen_evals.append(state.step)
        return {"my_eval": float(state.step)} if state.step % 2 == 0 else None

    def stop_after_two(step, params, behaviour, row):
        row["from_callback"] = step  # the row is written after the callback
        return step == 1

    cfg = _cfg(model_path, tmp_path, num_steps=5, checkpoint_every=3, export_hf=True)
    history = train(cfg, reward_fn=letter_reward, eval_fn=every_other, callback=stop_after_two)
    assert [r["step"] for r in history] == [0, 1] and seen_evals == [1, 2]
    assert "my_eval" not in history[0] and history[1]["my_eval"] == 2.0
    on_disk = read_metrics(tmp_path / "run")
    assert [r["from_callback"] for r in on_disk] == [0, 1] and on_disk[1]["my_eval"] == 2.0
    from llm.rl.checkpoint import Checkpointer

    ckpt = Checkpointer(tmp_path / "run" / "checkpoints")
    assert ckpt.all_steps() == [2]  # the stopping step, though not on the schedule
    ckpt.close()
    assert (tmp_path / "run" / "hf" / "config.json").is_file()


def test_hooks_are_checked(model_path, tmp_path):
    clash = lambda setup, state: {"loss": 0.0}
    with pytest.raises(ValueError, match=r"already has: \['loss'\]"):
        train(_cfg(model_path, tmp_path, num_steps=1), reward_fn=letter_reward, eval_fn=clash)
    chatty = lambda step, params, behaviour, row: row
    with pytest.raises(TypeError, match="callback must return None, True or False"):
        train(_cfg(model_path, tmp_path, num_steps=1), reward_fn=letter_reward, callback=chatty)


def _hand_written_loop(cfg, train_set, held_out):
    """train()'s loop from the public pieces of llm.rl (what the README shows)."""
    setup, state = init_run(cfg)
    batches = BatchIterator(train_set, cfg.prompts_per_step, seed=cfg.seed)
    lr = learning_rate_fn(cfg)
    eval_sampling = setup.sampling._replace(temperature=cfg.eval_temperature)
    rows = []
    for t in range(cfg.num_steps):
        if t % cfg.refresh_every == 0:
            state = refresh_behaviour(setup, state)
        ro = rollout(
            setup.graphdef,
            state.behaviour,
            next(batches),
            setup.renderer,
            setup.reward_fn,
            num_samples=cfg.samples_per_prompt,
            sampling=setup.sampling,
            key=step_key(state),
        )
        state, metrics = update(setup, state, ro, learning_rate=lr(t))
        advantages = metrics.pop("advantages")
        is_correct = correctness(setup.reward_fn)
        row = {"step": t, "lr": lr(t), "behaviour_age": t % cfg.refresh_every}
        row["behaviour_version"] = t - t % cfg.refresh_every
        row |= sample_stats(ro.rewards_PxG, advantages, ro.lengths_B, ro.finished_B, is_correct)
        row |= metrics | {"skipped": int(not metrics["finite"])}
        if state.step % cfg.eval_every == 0 or state.step == cfg.num_steps:
            row |= evaluate(
                setup.graphdef,
                state.params,
                held_out,
                setup.renderer,
                setup.reward_fn,
                key=eval_key(state),
                sampling=eval_sampling,
                num_samples=cfg.eval_pass_k,
                chunk=64,
            )
        rows.append(row)
    return rows, state


def test_a_hand_written_loop_reproduces_train_bit_for_bit(model_path, tmp_path):
    cfg = _cfg(
        model_path,
        tmp_path,
        num_steps=4,
        refresh_every=2,
        warmup_steps=2,
        lr_schedule="cosine",
        min_lr_ratio=0.1,
        eval_prompts=3,
        eval_every=2,
        eval_pass_k=2,
        eval_temperature=1.0,
    )
    train_set = make_arithmetic_examples(64, seed=3)
    held_out = make_arithmetic_examples(3, seed=4)
    history, state = train(cfg, dataset=train_set, eval_dataset=held_out, return_state=True)
    rows, own_state = _hand_written_loop(cfg, train_set, held_out)
    assert "accuracy" in rows[0] and "eval_pass@2" in rows[1] and "eval_pass@2" not in rows[0]
    assert [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history] == rows
    assert own_state.step == state.step == 4
    leaves = [jax.tree.leaves(s.params) + jax.tree.leaves(s.opt_state) for s in (state, own_state)]
    for a, b in zip(*leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rows_finish_one_step_late_and_are_the_rows_finished_at_once(
    model_path, tmp_path, monkeypatch
):
    """Without evaluation, checkpoints or a callback, step t's metrics are fetched after
    step t + 1's update is dispatched; a callback (which needs each row at once) gives the
    same rows but the timings."""
    from llm.rl import pipeline as pipeline_lib
    from llm.rl.step import PendingRow

    events, dispatch, finish = [], pipeline_lib.dispatch_learn, PendingRow.finish

    def recording_dispatch(setup, state, ro, **kw):
        events.append(("dispatch", state.step))
        return dispatch(setup, state, ro, **kw)

    def recording_finish(row, next_start=None):
        events.append(("fetch", row.step))
        return finish(row, next_start)

    monkeypatch.setattr(pipeline_lib, "dispatch_learn", recording_dispatch)
    monkeypatch.setattr(PendingRow, "finish", recording_finish)
    cfg = _cfg(model_path, tmp_path, num_steps=4, checkpoint_every=0)
    late = train(cfg)
    assert events == [
        ("dispatch", 0), ("dispatch", 1), ("fetch", 0), ("dispatch", 2), ("fetch", 1),
        ("dispatch", 3), ("fetch", 2), ("fetch", 3),
    ]  # fmt: skip
    events.clear()
    seen = []
    at_once = train(cfg.replace(out_dir=str(tmp_path / "b")), callback=lambda *a: seen.append(1))
    assert events == [(e, t) for t in range(4) for e in ("dispatch", "fetch")]
    assert [r["step"] for r in late] == [0, 1, 2, 3] and len(seen) == 4
    untimed = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]  # noqa: E731
    assert untimed(late) == untimed(at_once)
    assert list(late[0]) == list(at_once[0])  # the same keys in the same order
    assert all(r["step_time"] > 0 and r["update_time"] > 0 for r in late)
    written = read_metrics(tmp_path / "run")
    assert [r["step"] for r in written] == [0, 1, 2, 3]
