"""The learner reads only the live completion slots (`llm.rl.batch.completion_width`): the
trimmed batch gives the untrimmed loss, gradients and metrics, and few compiled shapes.

Tiny random qwen2 model (llm.models.tiny), N = 64 slots, completions of 3..32 tokens, so the
model reads N' = 32 slots and the longest row fills every one of them (a row at the cap);
prompts shared by their G rows, as in a rollout. 8 simulated CPU devices (tests/conftest.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm.models.sharding import make_mesh, param_shardings
from llm.models.tiny import tiny_config
from llm.models.transformer import Transformer
from llm.rl.batch import build_batch, completion_width
from llm.rl.checkpoint import abstract_like
from llm.rl.logprobs import Scoring, completion_scores
from llm.rl.losses import GRPO, AsymRE
from llm.rl.optimizer import OptSpec, hyperparams
from llm.rl.train_step import batch_spec, step_functions
from llm.rl.transfer import batch_to_global

P, G, N, LIVE = 2, 4, 64, 32
OPT = OptSpec(eps=1.0)  # Adam's first step with eps = 1 is u = g / (|g| + 1): g = u / (1 - |u|)


def _rollout(layers: int) -> dict:
    model = Transformer(tiny_config("qwen2", num_hidden_layers=layers), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(6, 300, size=int(rng.integers(3, 9))).tolist() for _ in range(P)]
    lengths = rng.integers(3, 21, size=P * G).astype(np.int32)
    lengths[5] = LIVE  # the longest fills the bucket: 32 of the 64 slots, in micro-batch 2
    tokens = rng.integers(6, 300, size=(P * G, N)).astype(np.int32)
    tokens[np.arange(N)[None, :] >= lengths[:, None]] = 0
    return dict(
        model=model,
        graphdef=graphdef,
        params=nnx.to_pure_dict(state),
        rows=[p for p in prompts for _ in range(G)],
        tokens=tokens,
        lengths=lengths,
        advantages=rng.normal(size=P * G).astype(np.float32),
        behaviour=-rng.uniform(0.5, 3.0, size=(P * G, N)).astype(np.float32),
    )


@pytest.fixture(scope="module")
def rollout():
    """The tiny model's two layers (a slow whole-step test)."""
    return _rollout(2)


@pytest.fixture(scope="module")
def shallow():
    """One layer: the fast lane's checks compile in half the time."""
    return _rollout(1)


def _batch(ro, *, trim, micro_batches=1, tokens=None, **kw):
    tokens = ro["tokens"] if tokens is None else tokens
    return build_batch(
        ro["rows"], tokens, ro["lengths"], ro["advantages"], pad_token_id=0,
        micro_batches=micro_batches, behaviour_logprobs_BxN=ro["behaviour"][:, : tokens.shape[1]],
        group_size=G, trim=trim, **kw,
    )  # fmt: skip


def test_completion_width_is_a_length_bucket_with_few_shapes():
    for slots in (1, 20, 64, 512, 4096):
        widths = np.array([completion_width(n, slots) for n in range(slots + 1)])
        assert (widths >= np.maximum(np.arange(slots + 1), 1)).all() and (widths <= slots).all()
        assert (np.diff(widths) >= 0).all()
        # at most 4 shapes per doubling past the 16-token minimum, and the budget itself
        bound = 4 * max(0, int(np.ceil(np.log2(slots / 16)))) + 1
        assert len(set(widths.tolist())) <= bound, slots
    assert len({completion_width(n, 512) for n in range(513)}) == 16
    assert completion_width(LIVE, N) == LIVE and completion_width(LIVE + 1, N) == 48
    with pytest.raises(ValueError, match="longest completion"):
        completion_width(65, 64)


def test_trimmed_batch_keeps_every_loss_input(shallow):
    """Only the completions the model reads are cut (to N' = 32, all pad past it); the mask,
    behaviour and reference log-probs, advantages and prompts are those of all N slots."""
    full, trimmed = _batch(shallow, trim=False), _batch(shallow, trim=True)
    assert full.completions.shape == (1, P * G, N) and trimmed.completions.shape == (1, P * G, LIVE)
    np.testing.assert_array_equal(trimmed.completions, full.completions[..., :LIVE])
    assert not full.completions[..., LIVE:].any()
    for name in ("prompt_tokens", "prompt_mask", "loss_mask", "advantages",
                 "behaviour_logprobs", "ref_logprobs"):  # fmt: skip
        np.testing.assert_array_equal(getattr(trimmed, name), getattr(full, name), err_msg=name)
    assert trimmed.loss_mask.shape[-1] == N  # "constant" divides by B * max_new_tokens
    # an engine that returns fewer columns than the budget: the loss still sees N slots
    narrow = _batch(shallow, trim=True, tokens=shallow["tokens"][:, :40], max_new_tokens=N)
    assert narrow.completions.shape[-1] == LIVE and narrow.loss_mask.shape[-1] == N
    np.testing.assert_array_equal(narrow.loss_mask, full.loss_mask)
    np.testing.assert_array_equal(narrow.completions, trimmed.completions)
    # a row truncated at max_new_tokens: nothing to trim
    capped = shallow | {"lengths": np.where(np.arange(P * G) == 2, N, shallow["lengths"])}
    assert _batch(capped, trim=True).completions.shape[-1] == N
    with pytest.raises(ValueError, match="less than the completions' width"):
        _batch(shallow, trim=True, max_new_tokens=N - 1)
    with pytest.raises(ValueError, match="lengths_B must be in"):
        _batch(shallow, trim=True, tokens=shallow["tokens"][:, :8])


def test_trimmed_scores_and_their_gradient_are_the_untrimmed_ones(shallow):
    """log pi, entropy and inside on all N slots, and the VJP of log pi for a cotangent on
    the mask (what every loss back-propagates), trimmed vs untrimmed, in one compile."""
    mbs = [jax.tree.map(lambda x: jnp.asarray(x[0]), _batch(shallow, trim=t)) for t in (0, 1)]
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=(P * G, N)), jnp.float32)
    scoring = Scoring(0.7)  # (a nucleus, top_p < 1, doubles the compile)

    @jax.jit
    def scores_and_vjp(params, full, trimmed):
        out = []
        for mb in (full, trimmed):

            def fn(p, mb=mb):
                lp, *rest = completion_scores(shallow["graphdef"], p, mb, 128, None, scoring)
                return lp, rest

            lp, vjp, rest = jax.vjp(fn, params, has_aux=True)
            out.append(((lp, *rest), vjp(cotangent * mb.loss_mask)[0]))
        return out

    (full, g_full), (trimmed, g_trim) = scores_and_vjp(shallow["params"], *mbs)
    mask = np.asarray(mbs[0].loss_mask) > 0
    assert mask[:, LIVE - 1].any()  # the last live slot is read
    for a, b in zip(full[:2], trimmed[:2], strict=True):
        np.testing.assert_allclose(np.where(mask, b, 0), np.where(mask, a, 0), rtol=1e-6)
        assert not np.asarray(b)[:, LIVE:].any()  # past every end: 0, never computed
    np.testing.assert_array_equal(np.asarray(trimmed[2])[mask], np.asarray(full[2])[mask])
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_trim), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * float(np.abs(a).max()))


def _step(ro, fns, batch, params=None):
    """(gradient, metrics) of one step from ``ro``'s params: lr 1, no decay, no clipping,
    Adam(eps = 1), so the gradient is read back from the update u = g / (|g| + 1) (to the
    rounding of the new params, half a float32 spacing of |p|: `_assert_same_step`)."""
    params = jax.tree.map(jnp.array, ro["params"]) if params is None else params
    hyper = hyperparams(1.0, 0.0, 1e9)
    new, _, metrics = fns.step(params, fns.init_opt(params), batch, hyper, {})

    def grad(old, p):
        u = np.asarray(old, np.float64) - np.asarray(p, np.float64)
        return u / (1.0 - np.abs(u))

    return jax.tree.map(grad, ro["params"], new), {k: float(v) for k, v in metrics.items()}


def _assert_same_step(full, trimmed, params):
    """Same metrics, same gradient (``params``: the step's, whose rounding bounds the
    read-back)."""
    (g_full, m_full), (g_trim, m_trim) = full, trimmed
    assert m_full["loss"] != 0.0 and m_full["grad_norm"] > 0.0
    for k, v in m_full.items():
        np.testing.assert_allclose(m_trim[k], v, rtol=2e-6, atol=1e-7, err_msg=k)
    top = max(float(np.abs(g).max()) for g in jax.tree.leaves(g_full))
    leaves = (jax.tree.leaves(t) for t in (g_full, g_trim, params))
    for a, b, p in zip(*leaves, strict=True):
        rounding = 2 * np.spacing(np.abs(np.asarray(p, np.float32)))  # of both new params
        excess = np.abs(b - a) - (1e-4 * np.abs(a) + 1e-5 * top + rounding)
        assert excess.max() <= 0, (excess.max(), np.abs(b - a).max(), top)


def _reference(ro, fns, batch, params=None):
    """``batch`` with the log-probs of a reference (the params x 1.1) for GRPO's KL."""
    ref = jax.tree.map(lambda x: jnp.asarray(x) * 1.1, ro["params"]) if params is None else params
    out = batch._replace(ref_logprobs=fns.score(ref, batch, {}))
    assert out.ref_logprobs.shape == (2, P * G // 2, N)
    return out


STEP_LOSSES = [
    AsymRE(normalization="constant"),
    pytest.param(AsymRE(normalization="sequence_mean"), marks=pytest.mark.slow),
]  # GRPO with a KL to a reference: test_trimmed_sharded_step_is_the_untrimmed_step


@pytest.mark.parametrize("loss", STEP_LOSSES, ids=["asymre-constant", "asymre-seqmean"])
def test_trimmed_step_is_the_untrimmed_step(shallow, rollout, loss):
    """The whole jitted update, two micro-batches of shared prompts (the longest row in the
    second): loss, gradient (float32, read back from the update) and the drift metrics."""
    ro = shallow if loss == STEP_LOSSES[0] else rollout
    fns = step_functions(ro["graphdef"], None, None, None, loss, OPT)
    results = []
    for trim in (False, True):
        batch = jax.tree.map(jnp.asarray, _batch(ro, trim=trim, micro_batches=2))
        assert batch.completions.shape[-1] == (LIVE if trim else N)
        results.append(_step(ro, fns, batch))
    _assert_same_step(*results, ro["params"])


@pytest.mark.slow
def test_trimmed_sharded_step_is_the_untrimmed_step(shallow):
    """On a fsdp=4 x tp=2 mesh, the trimmed batch placed by `batch_to_global` (rows on fsdp),
    GRPO with a KL to a reference whose log-probs are scored sharded on the trimmed batch:
    the unsharded full-width step (two micro-batches)."""
    loss, ro, mesh = GRPO(normalization="token", beta=0.1), shallow, make_mesh("fsdp=4,tp=2")
    fns = step_functions(ro["graphdef"], None, None, None, loss, OPT)
    full = jax.tree.map(jnp.asarray, _batch(ro, trim=False, micro_batches=2))
    expected = _step(ro, fns, _reference(ro, fns, full))
    host = _batch(ro, trim=True, micro_batches=2)
    shardings = nnx.to_pure_dict(param_shardings(ro["model"], mesh))
    sharded = step_functions(
        ro["graphdef"], abstract_like(ro["params"], shardings), mesh, shardings, loss, OPT,
        batch_spec(mesh, P * G // 2), prompt_spec=batch_spec(mesh, host.prompt_tokens.shape[1]),
    )  # fmt: skip
    batch = batch_to_global(host, sharded.batch_sharding)
    assert batch.completions.shape == (2, P * G // 2, LIVE)
    assert batch.completions.sharding.spec == batch_spec(mesh, P * G // 2) != ()
    ref = jax.device_put(jax.tree.map(lambda x: jnp.asarray(x) * 1.1, ro["params"]), shardings)
    batch = _reference(ro, sharded, batch, ref)
    params = jax.device_put(jax.tree.map(jnp.array, ro["params"]), shardings)
    _assert_same_step(expected, _step(ro, sharded, batch, params), ro["params"])


@pytest.mark.slow
def test_the_step_compiles_once_per_completion_bucket(shallow, count_compiles):
    """Eight steps whose longest completions span the 64 slots compile the step once for
    each of their buckets (16, 32, 64), never again for a bucket already seen."""
    fns = step_functions(shallow["graphdef"], None, None, None, AsymRE(), OPT, chunk_size=7)
    longest = [5, 20, 64, 13, 30, 2, 64, 17]
    for n in longest:
        lengths = np.minimum(shallow["lengths"], n)
        lengths[0] = n
        ro = shallow | {"lengths": lengths}
        _step(ro, fns, jax.tree.map(jnp.asarray, _batch(ro, trim=True)))
    widths = {completion_width(n, N) for n in longest}
    assert widths == {16, 32, 64}
    steps = {name: n for name, n in count_compiles.items() if "train_step" in name}
    assert sum(steps.values()) == len(widths), count_compiles
