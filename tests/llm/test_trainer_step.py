"""The jitted train step on its own: sharding, micro-batching, skipping, teacher forcing.

Tiny random qwen2 model (llm.models.tiny), 8 simulated CPU devices (tests/conftest.py).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm.models.sharding import make_mesh, param_shardings
from llm.models.tiny import tiny_config
from llm.models.transformer import Transformer
from llm.rl import train_step as update
from llm.rl.batch import build_batch
from llm.rl.checkpoint import abstract_like
from llm.rl.logprobs import MODEL_SCORING, Scoring, scores_from_hidden
from llm.rl.losses import CISPO, GRPO, TOPR, AsymRE, ISReinforce, loss_weights
from llm.rl.optimizer import OptSpec, hyperparams
from llm.rl.train_step import COMPILED_STEPS, batch_spec, step_functions
from llm.sampler import generate_from_state

P, G, N = 2, 4, 6
HYPER = dict(learning_rate=1e-2, weight_decay=0.01, max_grad_norm=1.0)
# Adam's first step is ~ lr * g / (|g| + eps): with the default eps = 1e-8, coordinates whose
# gradient is ~1e-8 turn float reduction-order noise into O(lr) differences, so the
# comparisons use a well-conditioned eps.
OPT = OptSpec(eps=1e-3)


@pytest.fixture(scope="module")
def setup():
    config = tiny_config("qwen2")
    model = Transformer(config, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(6, 300, size=int(rng.integers(3, 7))).tolist() for _ in range(P)]
    rows = [p for p in prompts for _ in range(G)]
    completions = rng.integers(6, 300, size=(P * G, N)).astype(np.int32)
    lengths = rng.integers(1, N + 1, size=P * G).astype(np.int32)
    for b, n in enumerate(lengths):
        completions[b, n:] = 0
    advantages = rng.normal(size=P * G).astype(np.float32)
    return dict(
        model=model,
        graphdef=graphdef,
        params=params,
        rows=rows,
        completions=completions,
        lengths=lengths,
        advantages=advantages,
    )


def _fresh(params):
    return jax.tree.map(lambda x: jnp.array(np.asarray(x)), params)


def _run(setup, *, micro_batches=1, spec=None, mesh=None, advantages=None, behaviour=None, group=1):
    """One update from the setup's params; returns (host params, metrics, behaviour lp).

    ``group``: the batch's group_size (G: each prompt read once for its G rows)."""
    adv = setup["advantages"] if advantages is None else advantages
    spec = spec or AsymRE()
    host = build_batch(
        setup["rows"],
        setup["completions"],
        setup["lengths"],
        adv,
        pad_token_id=0,
        micro_batches=micro_batches,
        group_size=group,
    )
    if mesh is None:
        fns = step_functions(setup["graphdef"], None, None, None, spec, OPT)
        params, batch = _fresh(setup["params"]), jax.tree.map(jnp.asarray, host)
    else:
        shardings = nnx.to_pure_dict(param_shardings(setup["model"], mesh))
        fns = step_functions(
            setup["graphdef"],
            abstract_like(setup["params"], shardings),
            mesh,
            shardings,
            spec,
            OPT,
            batch_spec(mesh, P * G // micro_batches),
            prompt_spec=batch_spec(mesh, host.prompt_tokens.shape[1]),
        )
        params = jax.device_put(_fresh(setup["params"]), shardings)
        batch = jax.device_put(host, fns.batch_sharding)
    mu = params if behaviour is None else _fresh(behaviour)
    blp = fns.score(mu, batch, {})
    batch = batch._replace(behaviour_logprobs=blp)
    opt_state = fns.init_opt(params)
    params, _, metrics = fns.step(params, opt_state, batch, hyperparams(**HYPER), {})
    host_params = jax.tree.map(np.asarray, params)
    return host_params, {k: float(v) for k, v in metrics.items()}, np.asarray(blp)


def _assert_trees_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **tol)


@pytest.mark.slow
def test_sharded_step_matches_unsharded(setup):
    """On a mesh, with each prompt read once for its G rows, the update of separate copies."""
    mesh = make_mesh("fsdp=4,tp=2")
    p_ref, m_ref, _ = _run(setup)
    p_sh, m_sh, _ = _run(setup, mesh=mesh, group=G)
    assert jax.device_count() == 8
    _assert_trees_close(p_sh, p_ref, rtol=1e-5, atol=1e-6)
    for k in ("loss", "grad_norm", "entropy"):
        np.testing.assert_allclose(m_sh[k], m_ref[k], rtol=1e-5)
    # and the update did something
    moved = max(
        float(np.abs(x - np.asarray(y)).max())
        for x, y in zip(jax.tree.leaves(p_ref), jax.tree.leaves(setup["params"]), strict=True)
    )
    assert moved > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [
        AsymRE(),
        GRPO(epsilon_high=0.3),
        ISReinforce(level="token", normalization="token"),
        CISPO(eps_high=0.02),
        TOPR(normalization="sequence_mean"),
    ],
    ids=["asymre", "grpo", "is_reinforce", "cispo", "topr"],
)
def test_micro_batched_equals_full_batch(setup, spec):
    # a behaviour policy different from pi, so the ratios (GRPO/IS) are not all 1
    behaviour = jax.tree.map(lambda x: np.asarray(x) * 1.05, setup["params"])
    p_full, m_full, _ = _run(setup, spec=spec, behaviour=behaviour)
    p_micro, m_micro, _ = _run(setup, spec=spec, micro_batches=4, behaviour=behaviour)
    _assert_trees_close(p_micro, p_full, rtol=1e-5, atol=1e-6)
    for k in ("loss", "grad_norm", "logratio_abs", "ratio_mean", "ratio_max", "entropy"):
        np.testing.assert_allclose(m_micro[k], m_full[k], rtol=1e-5, atol=1e-7)
    assert m_full["logratio_abs"] > 1e-3


@pytest.mark.slow
def test_on_policy_logratio_is_zero_against_the_samplers_logprobs(setup):
    """Behaviour log-probs from the sampler (G per prompt at T = 0.7, top_p = 0.9), the step
    scoring the same params under the same transform: pi/mu = 1 to float32 rounding; scored
    at T = 1 instead, the drift is the temperature's."""
    prompts = setup["rows"][::G]
    out = generate_from_state(
        setup["graphdef"],
        setup["params"],
        prompts,
        max_new_tokens=N,
        temperature=0.7,
        top_p=0.9,
        eos_token_id=2,
        key=jax.random.key(5),
        num_samples=G,
    )
    host = build_batch(
        setup["rows"],
        np.asarray(out.tokens),
        np.asarray(out.lengths),
        setup["advantages"],
        pad_token_id=0,
        behaviour_logprobs_BxN=np.asarray(out.logprobs),
        group_size=G,
    )
    drift = {}
    for name, scoring in (("sampling", Scoring(0.7, 0.9)), ("model", MODEL_SCORING)):
        fns = step_functions(setup["graphdef"], None, loss_fn=GRPO(), opt_spec=OPT, scoring=scoring)
        params = _fresh(setup["params"])
        batch = jax.tree.map(jnp.asarray, host)
        _, _, metrics = fns.step(params, fns.init_opt(params), batch, hyperparams(**HYPER), {})
        drift[name] = {k: float(v) for k, v in metrics.items()}
    assert drift["sampling"]["logratio_abs"] < 1e-5
    np.testing.assert_allclose(drift["sampling"]["ratio_mean"], 1.0, atol=1e-5)
    assert drift["sampling"]["outside_nucleus"] == 0.0
    assert drift["model"]["logratio_abs"] > 1e-2


def test_non_finite_step_is_skipped(setup):
    adv = setup["advantages"].copy()
    adv[3] = np.nan
    params, metrics, _ = _run(setup, advantages=adv)
    assert metrics["finite"] == 0.0
    _assert_trees_close(params, jax.tree.map(np.asarray, setup["params"]), rtol=0, atol=0)
    _, ok, _ = _run(setup)
    assert ok["finite"] == 1.0


@pytest.mark.slow
def test_teacher_forcing_reproduces_sampler_logprobs(setup):
    """build_batch + score give the sampler's log-probs at temperature 1 (same positions)."""
    prompts = [setup["rows"][0], setup["rows"][-1], [7, 8]]
    out = generate_from_state(
        setup["graphdef"],
        setup["params"],
        prompts,
        max_new_tokens=N,
        temperature=1.0,
        eos_token_id=2,
        key=jax.random.key(3),
    )
    lengths = np.asarray(out.lengths)
    host = build_batch(
        prompts, np.asarray(out.tokens), lengths, np.zeros(3, np.float32), pad_token_id=0
    )
    fns = step_functions(setup["graphdef"], None, None, None)
    blp = np.asarray(fns.score(setup["params"], jax.tree.map(jnp.asarray, host), {}))[0]
    np.testing.assert_allclose(blp, np.asarray(out.logprobs), atol=2e-5)
    np.testing.assert_array_equal(host.loss_mask[0].sum(1), lengths)


def test_build_batch_rejects_bad_shapes(setup):
    with pytest.raises(ValueError, match="B = 8"):
        build_batch(
            setup["rows"][:3],
            setup["completions"],
            setup["lengths"],
            setup["advantages"],
            pad_token_id=0,
        )
    with pytest.raises(ValueError, match="micro_batches"):
        build_batch(
            setup["rows"],
            setup["completions"],
            setup["lengths"],
            setup["advantages"],
            pad_token_id=0,
            micro_batches=3,
        )


def test_chunked_logprobs_and_entropy_match_full_softmax():
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.normal(size=(2, 7, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, 11)), jnp.float32)
    logits = np.asarray(h) @ np.asarray(w)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = -(p * np.log(p)).sum(-1)
    y = rng.integers(0, 11, size=(2, 7))
    for chunk in (1, 3, 7):
        lp, entropy, inside = scores_from_hidden(h, w, y, chunk, MODEL_SCORING)
        np.testing.assert_allclose(entropy, expected, rtol=1e-5)
        np.testing.assert_allclose(
            lp, np.log(np.take_along_axis(p, y[..., None], -1))[..., 0], rtol=1e-5
        )
        assert bool(np.all(inside))


def test_constant_normalization_divides_by_the_generation_budget(setup):
    """Dr. GRPO's constant is B * max_new_tokens, whatever the padded prompt bucket."""
    for prompt_len in (3, 40):  # prompt buckets of 16 and 64
        rows = [list(range(6, 6 + prompt_len))] * (P * G)
        host = build_batch(
            rows, setup["completions"], setup["lengths"], setup["advantages"], pad_token_id=0,
            micro_batches=2,
        )  # fmt: skip
        w = loss_weights(host.loss_mask, "constant")
        np.testing.assert_allclose(w, host.loss_mask / (P * G * N))


def test_a_loss_with_the_old_numerator_denominator_contract_is_refused(setup):
    host = build_batch(
        setup["rows"], setup["completions"], setup["lengths"], setup["advantages"], pad_token_id=0
    )
    mb = jax.tree.map(lambda x: jnp.asarray(x[0]), host)
    w = loss_weights(mb.loss_mask, "sequence")
    old = lambda lp, mu, adv, mask: (lp.sum(), 1.0)  # (numerator, denominator)
    with pytest.raises(TypeError, match="loss_fn must return one scalar"):
        update._loss_terms(old, jnp.zeros((P * G, N)), mb, w)
    n = update._loss_terms(AsymRE(), -jnp.ones((P * G, N)), mb, w)
    np.testing.assert_allclose(n, (setup["advantages"][:, None] * host.loss_mask[0]).sum() / 8)


@pytest.mark.slow
def test_reference_logprobs_reach_a_loss_that_needs_them(setup):
    """GRPO with beta > 0 gets the frozen reference's log-probs; the KL is 0 at pi = ref."""
    host = build_batch(
        setup["rows"], setup["completions"], setup["lengths"], setup["advantages"], pad_token_id=0
    )
    batch = jax.tree.map(jnp.asarray, host)
    fns = step_functions(setup["graphdef"], None, None, None, GRPO(beta=0.5), OPT)
    lp = fns.score(setup["params"], batch, {})
    batch = batch._replace(behaviour_logprobs=lp, ref_logprobs=lp)
    with_kl = fns.step(
        _fresh(setup["params"]), fns.init_opt(setup["params"]), batch, hyperparams(**HYPER), {}
    )[2]
    plain = step_functions(setup["graphdef"], None, None, None, GRPO(), OPT)
    without = plain.step(
        _fresh(setup["params"]), plain.init_opt(setup["params"]), batch, hyperparams(**HYPER), {}
    )[2]
    np.testing.assert_allclose(float(with_kl["loss"]), float(without["loss"]), rtol=1e-6)
    far = batch._replace(ref_logprobs=lp - 1.0)
    shifted = fns.step(
        _fresh(setup["params"]), fns.init_opt(setup["params"]), far, hyperparams(**HYPER), {}
    )[2]
    assert float(shifted["loss"]) > float(without["loss"]) + 0.1


@pytest.mark.slow
@pytest.mark.parametrize("micro_batches", [1, 4])
def test_shared_prompts_are_exact(setup, micro_batches):
    """Reading each prompt once for its G completions (KV cache repeated G times) gives the
    update of G separate copies: whole groups per micro-batch (1), part of a group (4); on a
    mesh: test_sharded_step_matches_unsharded."""
    behaviour = jax.tree.map(lambda x: np.asarray(x) * 1.05, setup["params"])
    kw = dict(spec=GRPO(), micro_batches=micro_batches, behaviour=behaviour)
    p_copies, m_copies, lp_copies = _run(setup, group=1, **kw)
    p_shared, m_shared, lp_shared = _run(setup, group=G, **kw)
    np.testing.assert_allclose(lp_shared, lp_copies, rtol=1e-5, atol=1e-5)
    _assert_trees_close(p_shared, p_copies, rtol=1e-5, atol=1e-6)
    for k in ("loss", "grad_norm", "logratio_abs", "entropy"):
        np.testing.assert_allclose(m_shared[k], m_copies[k], rtol=1e-5, atol=1e-7)


def test_shared_prompt_layout_and_checks(setup):
    host = build_batch(
        setup["rows"], setup["completions"], setup["lengths"], setup["advantages"],
        pad_token_id=0, micro_batches=1, group_size=G,
    )  # fmt: skip
    assert host.prompt_tokens.shape[:2] == (1, P) and host.completions.shape == (1, P * G, N)
    rows = [list(r) for r in setup["rows"]]
    rows[1] = rows[1] + [7]
    with pytest.raises(ValueError, match="do not share one prompt"):
        build_batch(
            rows, setup["completions"], setup["lengths"], setup["advantages"],
            pad_token_id=0, group_size=G,
        )  # fmt: skip


def test_equal_configurations_share_one_compiled_step(setup, count_compiles):
    """An equal configuration gets the same jitted functions, so a second run (a sweep over
    delta_v, which acts on the host only, or over the learning rate) compiles nothing."""

    def make(loss):  # a chunk size no other test uses: the first run compiles
        return step_functions(setup["graphdef"], None, None, None, loss, OPT, chunk_size=5)

    fns = make(AsymRE(delta_v=-0.1))
    host = build_batch(
        setup["rows"], setup["completions"], setup["lengths"], setup["advantages"], pad_token_id=0
    )
    batch = jax.tree.map(jnp.asarray, host)

    def run(f, learning_rate):
        params = _fresh(setup["params"])
        hyper = hyperparams(**(HYPER | {"learning_rate": learning_rate}))
        return jax.block_until_ready(f.step(params, f.init_opt(params), batch, hyper, {}))

    run(fns, 1e-2)
    assert sum(count_compiles.values()) > 0
    count_compiles.clear()
    again = make(AsymRE(delta_v=-0.3))
    run(again, 3e-3)
    assert again is fns and not count_compiles, count_compiles
    assert make(AsymRE(normalization="token")) is not fns


def test_step_functions_rejects_an_unhashable_loss(setup):
    @dataclasses.dataclass
    class MutableLoss:  # eq without frozen: unhashable
        scale: float = 1.0

        def __call__(self, logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN):
            return AsymRE()(logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN)

    with pytest.raises(TypeError, match="loss_fn must be hashable"):
        step_functions(setup["graphdef"], None, loss_fn=MutableLoss())


def test_compiled_steps_are_bounded(setup):
    """Only the COMPILED_STEPS most recently used combinations stay compiled (last in this
    module: it evicts the bundles the other tests built)."""
    first = step_functions(setup["graphdef"], None, chunk_size=1)
    assert step_functions(setup["graphdef"], None, chunk_size=1) is first
    for chunk in range(2, COMPILED_STEPS + 2):
        step_functions(setup["graphdef"], None, chunk_size=chunk)
    assert step_functions(setup["graphdef"], None, chunk_size=1) is not first
