"""The learner's device path (issue 26, item 3): the batch built on the device from the
engine's arrays is the host batch bit for bit, the update it feeds is the host one, and the
advantages are computed inside the jitted step with delta_v traced (no recompile)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm.data.iterator import BatchIterator
from llm.models.tiny import make_tiny_checkpoint
from llm.rl import init_run, rl_step
from llm.rl.batch import build_batch, prompt_rows
from llm.rl.learn_step import advantage_rows, assemble_batch, row_layout
from llm.rl.losses import (
    GRPO,
    AsymRE,
    ISReinforce,
    advantage_options,
    advantage_source,
    traced_advantages,
)
from llm.rl.state import step_key
from llm.rl.step import behaviour_rollout, dispatch_update, refresh
from llm.rl.tasks import run_examples
from llm.trainer import TrainConfig


def _rows(P, G, N, seed):
    rng = np.random.default_rng(seed)
    prompts = [list(rng.integers(1, 50, size=rng.integers(2, 11))) for _ in range(P)]
    prompts = [p for p in prompts for _ in range(G)]
    lengths = rng.integers(0, N + 1, size=P * G).astype(np.int32)
    tokens = rng.integers(1, 50, size=(P * G, N)).astype(np.int32)
    return prompts, tokens, lengths, -rng.random((P * G, N)).astype(np.float32)


ASSEMBLE = jax.jit(assemble_batch, static_argnames="layout")


@pytest.mark.parametrize(
    "P,G,M,data,trim",
    [(3, 2, 1, 1, True), (3, 2, 1, 4, True), (2, 4, 2, 1, True), (2, 4, 4, 3, False),
     (4, 2, 2, 8, True), (1, 6, 3, 4, True)],
)  # fmt: skip
def test_the_device_batch_is_the_host_batch_bit_for_bit(P, G, M, data, trim):
    N = 40
    prompts, tokens, lengths, logprobs = _rows(P, G, N, seed=P * 100 + G * 10 + M)
    kwargs = dict(micro_batches=M, group_size=G, row_multiple=data)
    host = build_batch(
        prompts, tokens, lengths, np.zeros(P * G, np.float32), pad_token_id=3,
        behaviour_logprobs_BxN=logprobs, max_new_tokens=N, trim=trim, **kwargs,
    )  # fmt: skip
    layout = row_layout(lengths, max_new_tokens=N, pad_token_id=3, trim=trim, **kwargs)
    block = prompt_rows(prompts, pad_token_id=3, **kwargs)
    device = ASSEMBLE(*block, tokens, logprobs, lengths, layout=layout)
    for name, want, got in zip(host._fields, host, device, strict=True):
        assert want.dtype == got.dtype and want.shape == got.shape, name
        np.testing.assert_array_equal(want, np.asarray(got), err_msg=name)


def test_the_device_batch_widens_an_engine_with_fewer_slots():
    prompts, tokens, lengths, logprobs = _rows(2, 2, 8, seed=1)
    lengths = np.minimum(lengths, 5)
    layout = row_layout(lengths, micro_batches=1, group_size=2, max_new_tokens=20)
    block = prompt_rows(prompts, pad_token_id=0, group_size=2)
    batch = ASSEMBLE(*block, tokens[:, :5], logprobs[:, :5], lengths, layout=layout)
    assert batch.completions.shape == (1, 4, 16) and batch.loss_mask.shape == (1, 4, 20)
    assert np.all(np.asarray(batch.behaviour_logprobs)[0, :, 5:] == 0)
    with pytest.raises(ValueError, match="exceed max_new_tokens"):
        ASSEMBLE(*block, np.zeros((4, 24), np.int32), np.zeros((4, 24), np.float32), lengths,
                 layout=layout)  # fmt: skip


def test_advantage_rows_split_prompt_major_and_pad_with_zeros():
    a = jnp.arange(8.0).reshape(2, 4)
    np.testing.assert_array_equal(advantage_rows(a, (2, 4)), [[0, 1, 2, 3], [4, 5, 6, 7]])
    np.testing.assert_array_equal(advantage_rows(a, (1, 10))[0, 8:], [0, 0])
    with pytest.raises(ValueError, match="do not fill 3 micro-batches"):
        advantage_rows(a, (3, 4))


def test_traced_advantages_take_the_options_as_arguments():
    rewards = jnp.array([[1.0, -1.0, 1.0, 1.0]])
    loss = AsymRE(delta_v=-0.1)
    assert loss.traced_options == ("delta_v",) and GRPO().traced_options == ()
    fn = jax.jit(lambda r, o: traced_advantages(loss, r, o))
    for delta_v in (-0.1, -0.5, 0.3):
        got = fn(rewards, {"delta_v": np.float32(delta_v)})
        want = AsymRE(delta_v=delta_v).advantages(rewards)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert fn._cache_size() == 1  # one program for every delta_v
    assert advantage_options(ISReinforce(delta_v=-0.2)) == {"delta_v": np.float32(-0.2)}
    with pytest.raises(ValueError, match=r"exactly the traced options \['delta_v'\]"):
        traced_advantages(loss, rewards, {})
    # leave_one_out and scale are static: they key the compiled step, delta_v does not
    assert AsymRE(delta_v=-0.1) == AsymRE(delta_v=-0.5) != AsymRE(leave_one_out=True)


def test_a_plain_loss_function_takes_asymre_advantages_with_the_config_options():
    def plain(logprobs, behaviour, adv, w):
        return -(w * adv * logprobs).sum()

    cfg = TrainConfig(delta_v=-0.3, leave_one_out=True)
    assert advantage_source(plain, cfg) == AsymRE(leave_one_out=True)
    assert advantage_source(plain, cfg).delta_v == -0.3
    assert advantage_source(GRPO(), cfg) == GRPO()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("device_path")
    cfg = TrainConfig(
        model_path=str(make_tiny_checkpoint(tmp / "llama", "llama")),
        task="arithmetic", task_kwargs={"num_examples": 32}, prompts_per_step=3,
        samples_per_prompt=2, micro_batches=1, max_new_tokens=6, refresh_every=1,
        eval_prompts=0, checkpoint_every=0, out_dir=str(tmp / "out"), progress=False,
        tensorboard=False, mesh="fsdp=4", mesh_subset=True,
    )  # fmt: skip
    setup, state = init_run(cfg)
    batches = BatchIterator(run_examples(cfg, None, None)[0], cfg.prompts_per_step, seed=0)
    state, _ = rl_step(setup, state, next(batches), learning_rate=1e-3)
    state = refresh(setup, state)[0]
    ro = behaviour_rollout(setup, state.behaviour, next(batches), step_key(state), version=1)
    return setup, state, ro


def _fresh(state):
    """A copy of ``state``'s donated arrays (params, moments), so it can update twice."""
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731
    return state._replace(params=copy(state.params), opt_state=copy(state.opt_state))


def test_the_engine_arrays_update_as_the_host_batch_does(run):
    setup, state, ro = run
    assert ro.device is not None and isinstance(ro.logprobs_BxN, jax.Array)
    assert tuple(setup.fns.batch_sharding.completions.spec) == (None, "fsdp")  # 6 rows -> 8
    host_ro = ro._replace(logprobs_BxN=np.asarray(ro.logprobs_BxN), device=None)
    new_device, m_device = dispatch_update(setup, _fresh(state), ro, learning_rate=1e-3)
    new_host, m_host = dispatch_update(setup, _fresh(state), host_ro, learning_rate=1e-3)
    m_device, m_host = m_device.fetch(), m_host.fetch()
    np.testing.assert_array_equal(m_device.pop("advantages"), m_host.pop("advantages"))
    assert m_device == m_host
    pairs = zip(jax.tree.leaves(new_device.params), jax.tree.leaves(new_host.params), strict=True)
    for a, b in pairs:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_new_delta_v_runs_the_same_compiled_step(run):
    setup, state, ro = run
    learn, out, sizes = setup.fns.learn, {}, []
    for delta_v in (-0.1, -0.6):
        shifted = dataclasses.replace(setup, advantage_source=AsymRE(delta_v=delta_v))
        _, pending = dispatch_update(shifted, _fresh(state), ro, learning_rate=1e-3)
        out[delta_v] = pending.fetch()
        sizes.append(learn._cache_size())
    assert sizes[0] == sizes[1]  # the second delta_v compiled nothing
    np.testing.assert_allclose(out[-0.1]["advantages"] - out[-0.6]["advantages"], -0.5, atol=1e-6)
    assert out[-0.1]["loss"] != out[-0.6]["loss"]
