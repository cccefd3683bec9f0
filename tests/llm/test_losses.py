"""The per-token loss contract (llm.rl.losses): the old formulas, the weights, the registry,
and CISPO / TOPR against hand-computed gradients. Pure functions on small random arrays."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import asymre_jax
from llm.rl.config import TrainConfig
from llm.rl.losses import (
    GRPO,
    LOSS_REGISTRY,
    LOSSES,
    AsymRE,
    ISReinforce,
    Loss,
    asymre_loss,
    broadcast_advantages,
    default_normalization,
    grpo_loss,
    is_reinforce_loss,
    loss_from_config,
    loss_weights,
    register_loss,
)
from llm.rl.losses.cispo import CISPO, cispo_loss
from llm.rl.losses.contract import check_token_inputs
from llm.rl.losses.topr import TOPR, topr_loss

B, N = 6, 5
NORMALIZATIONS = asymre_jax.NORMALIZATIONS


def _inputs(seed=0, M=None):
    """log pi, log mu (pi moved off mu), advantages [B], mask [B, N] with ragged lengths."""
    rng = np.random.default_rng(seed)
    shape = (B, N) if M is None else (M, B, N)
    lp = -rng.uniform(0.1, 3.0, size=shape).astype(np.float32)
    mu = (lp + rng.normal(scale=0.4, size=shape)).astype(np.float32)
    adv = rng.normal(size=shape[:-1]).astype(np.float32)
    lengths = rng.integers(1, N + 1, size=shape[:-1])
    mask = (np.arange(N) < lengths[..., None]).astype(np.float32)
    return jnp.asarray(lp), jnp.asarray(mu * mask), jnp.asarray(adv), jnp.asarray(mask)


def _new(loss, lp, mu, adv, mask, **kw):
    """The new contract on one batch: explicit token advantages, global weights."""
    w = loss_weights(mask, loss.normalization)
    return loss(lp, mu, broadcast_advantages(adv, mask), w, **kw)


OLD = {
    "asymre": lambda lp, mu, adv, m, norm: asymre_jax.asymre_loss(lp, adv, m, norm),
    "grpo": lambda lp, mu, adv, m, norm: asymre_jax.grpo_loss(
        lp, mu, adv, m, epsilon=0.1, epsilon_high=0.3, normalization=norm
    ),
    "is_sequence": lambda lp, mu, adv, m, norm: asymre_jax.is_reinforce_loss(
        lp, mu, adv, m, level="sequence", truncation=1.5, normalization=norm
    ),
    "is_token": lambda lp, mu, adv, m, norm: asymre_jax.is_reinforce_loss(
        lp, mu, adv, m, level="token", truncation=1.5, normalization=norm
    ),
}
NEW = {
    "asymre": lambda norm: AsymRE(normalization=norm),
    "grpo": lambda norm: GRPO(0.1, 0.3, normalization=norm),
    "is_sequence": lambda norm: ISReinforce(truncation=1.5, level="sequence", normalization=norm),
    "is_token": lambda norm: ISReinforce(truncation=1.5, level="token", normalization=norm),
}


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("name", list(OLD))
def test_loss_and_gradient_equal_the_old_formulas(name, normalization):
    lp, mu, adv, mask = _inputs(seed=len(name) + len(normalization))
    loss = NEW[name](normalization)
    old = jax.value_and_grad(lambda x: OLD[name](x, mu, adv, mask, normalization))(lp)
    new = jax.value_and_grad(lambda x: _new(loss, x, mu, adv, mask))(lp)
    np.testing.assert_allclose(new[0], old[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(new[1], old[1], rtol=1e-6, atol=1e-8)
    assert float(jnp.abs(old[1]).max()) > 1e-3  # a real gradient, compared


def test_grpo_kl_term_equals_the_old_formula():
    lp, mu, adv, mask = _inputs(seed=3)
    ref = lp - 0.3 * mask
    old = jax.grad(lambda x: asymre_jax.grpo_loss(x, mu, adv, mask, ref_logprobs=ref, beta=0.5))
    new = jax.grad(lambda x: _new(GRPO(beta=0.5), x, mu, adv, mask, ref_logprobs=ref))
    np.testing.assert_allclose(new(lp), old(lp), rtol=1e-6, atol=1e-8)
    assert GRPO(beta=0.5).needs_reference and not GRPO().needs_reference


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_micro_batches_just_sum(normalization):
    """Weights of the whole step's mask [M, b, N]: the micro-batch losses and gradients sum
    to the full batch's (what the train step's scan does)."""
    M = 3
    lp, mu, adv, mask = _inputs(seed=7, M=M)
    loss = ISReinforce(level="sequence", truncation=2.0, normalization=normalization)
    w = loss_weights(mask, normalization)

    def summed(x):
        return sum(loss(x[k], mu[k], broadcast_advantages(adv[k], mask[k]), w[k]) for k in range(M))

    flat = [a.reshape(M * B, *a.shape[2:]) for a in (lp, mu, adv, mask)]
    full = jax.value_and_grad(lambda x: _new(loss, x, *flat[1:]))(flat[0])
    parts = jax.value_and_grad(summed)(lp)
    np.testing.assert_allclose(parts[0], full[0], rtol=1e-6)
    np.testing.assert_allclose(parts[1].reshape(M * B, N), full[1], rtol=1e-6, atol=1e-8)


def test_weights_of_each_normalization():
    mask = jnp.array([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    expected = {
        "sequence": mask / 2,
        "token": mask / 4,
        "sequence_mean": mask / jnp.array([[6.0], [2.0]]),
        "constant": mask / 8,
    }
    for normalization, w in expected.items():
        np.testing.assert_allclose(loss_weights(mask, normalization), w)
    np.testing.assert_array_equal(loss_weights(jnp.zeros((2, 3)), "token"), 0.0)  # no 0/0
    with pytest.raises(ValueError, match="normalization must be one of"):
        loss_weights(mask, "tokens")
    with pytest.raises(ValueError, match="Array|mask must have shape"):
        loss_weights(jnp.ones(3), "token")


def test_advantages_are_broadcast_explicitly():
    mask = jnp.ones((2, 3))
    np.testing.assert_array_equal(
        broadcast_advantages(jnp.array([1.0, -2.0]), mask), [[1, 1, 1], [-2, -2, -2]]
    )
    with pytest.raises(ValueError, match=r"advantages must have shape \(2,\)"):
        broadcast_advantages(jnp.ones(3), mask)
    with pytest.raises(ValueError, match=r"w_BxN must have shape \[B, N\] = \(2, 3\)"):
        check_token_inputs(mask, ("w_BxN", jnp.ones((2, 4))))
    with pytest.raises(ValueError, match="adv_BxN must have shape"):
        AsymRE()(mask, mask, jnp.ones(2), mask)  # a [B] advantage is refused, not broadcast


# ----------------------------------------------------------------------- CISPO and TOPR


def test_cispo_gradient_by_hand():
    """d L / d log pi_t = -w_t min(pi_t / mu_t, 1 + eps_high) A_t (the weight held constant)."""
    lp, mu, adv, mask = _inputs(seed=11)
    w = loss_weights(mask, "token")
    adv_BxN = broadcast_advantages(adv, mask)
    eps = 0.2
    grad = jax.grad(cispo_loss)(lp, mu, adv_BxN, w, eps_high=eps)
    ratio = np.exp(np.asarray(lp) - np.asarray(mu))
    by_hand = -np.asarray(w) * np.minimum(ratio, 1 + eps) * np.asarray(adv_BxN)
    np.testing.assert_allclose(grad, by_hand, rtol=1e-6, atol=1e-9)
    assert ((ratio > 1 + eps) & (np.asarray(mask) > 0)).any()  # the cap acted somewhere
    assert ((ratio < 1 + eps) & (np.asarray(mask) > 0)).any()  # and not everywhere
    # no lower cap: a tiny ratio keeps its (tiny) gradient, unlike PPO's clip
    one = jnp.ones((1, 1))
    tiny = jax.grad(cispo_loss)(jnp.array([[-5.0]]), jnp.array([[-1.0]]), -one, one)
    np.testing.assert_allclose(tiny, [[np.exp(-4.0)]], rtol=1e-6)


def test_cispo_value_by_hand_and_on_policy():
    lp = jnp.array([[-1.0, -2.0]])
    mu = lp - jnp.array([[1.0, -0.5]])  # ratios e and e^-0.5
    adv, w = jnp.array([[2.0, 2.0]]), jnp.array([[0.5, 0.5]])
    value = cispo_loss(lp, mu, adv, w, eps_high=0.5)
    np.testing.assert_allclose(value, -(0.5 * 1.5 * 2 * -1.0 + 0.5 * np.exp(-0.5) * 2 * -2.0))
    loss = CISPO(eps_high=0.5)  # on-policy: REINFORCE (AsymRE's per-token form)
    np.testing.assert_allclose(loss(lp, lp, adv, w), AsymRE()(lp, lp, adv, w))


def _topr_by_hand(lp, mu, adv, mask, w):
    """-w_it omega_i A_i for the gradient, omega_i = 1 if A_i >= 0 else min(1, pi/mu)."""
    lp, mu, adv, mask, w = map(np.asarray, (lp, mu, adv, mask, w))
    grad = np.zeros_like(lp)
    for i in range(lp.shape[0]):
        seq_ratio = np.exp(sum(lp[i, t] - mu[i, t] for t in range(lp.shape[1]) if mask[i, t]))
        omega = 1.0 if adv[i] >= 0 else min(1.0, seq_ratio)
        grad[i] = -w[i] * omega * adv[i]
    return grad


def test_topr_gradient_by_hand():
    lp, mu, adv, mask = _inputs(seed=5)
    adv = adv.at[0].set(-1.0)
    mu = mu.at[0].set(lp[0] + 1.0)  # row 0: negative, pi(y) << mu(y): tapered
    mu = mu.at[1].set(lp[1] - 1.0)  # row 1: pi(y) > mu(y), clipped at 1 whatever its sign
    mu = mu * mask
    w = loss_weights(mask, "sequence")
    grad = jax.grad(topr_loss)(lp, mu, broadcast_advantages(adv, mask), w)
    np.testing.assert_allclose(grad, _topr_by_hand(lp, mu, adv, mask, w), rtol=1e-5, atol=1e-9)
    assert (np.asarray(adv) > 0).any() and (np.asarray(adv) < 0).any()


def test_topr_positives_ignore_the_ratio_and_negatives_taper():
    lp = jnp.array([[-1.0, -1.0]])
    far = lp + 3.0  # mu much likelier than pi: pi(y)/mu(y) = e^-6
    pos = jax.grad(topr_loss)(lp, far, jnp.ones((1, 2)), jnp.ones((1, 2)))
    neg = jax.grad(topr_loss)(lp, far, -jnp.ones((1, 2)), jnp.ones((1, 2)))
    np.testing.assert_allclose(pos, [[-1.0, -1.0]])  # supervised learning, no weight
    np.testing.assert_allclose(neg, [[np.exp(-6.0)] * 2], rtol=1e-5)
    # on-policy TOPR is AsymRE
    lp, mu, adv, mask = _inputs(seed=2)
    np.testing.assert_allclose(
        _new(TOPR(), lp, lp * mask, adv, mask), _new(AsymRE(), lp, lp, adv, mask), rtol=1e-6
    )


def test_every_loss_function_under_jit_and_vmap():
    lp, mu, adv, mask = _inputs(seed=9, M=2)
    adv_t = jax.vmap(broadcast_advantages)(adv, mask)
    w = loss_weights(mask, "token")

    def asymre(logprobs, behaviour, adv, w):  # AsymRE reads no behaviour log-probs
        return asymre_loss(logprobs, adv, w)

    for fn in (asymre, grpo_loss, is_reinforce_loss, cispo_loss, topr_loss):
        batched = jax.jit(jax.vmap(fn))(lp, mu, adv_t, w)
        np.testing.assert_allclose(
            batched, [fn(lp[k], mu[k], adv_t[k], w[k]) for k in range(2)], rtol=1e-6
        )


def test_relatives_check_their_options():
    with pytest.raises(ValueError, match="eps_high must be >= 0"):
        CISPO(eps_high=-0.1)
    with pytest.raises(ValueError, match="normalization must be one of"):
        TOPR(normalization="tokens")
    with pytest.raises(ValueError, match="scale must be one of"):
        TOPR(scale="std")
    assert CISPO().normalization == "token" and TOPR().normalization == "sequence"
    assert hash(TOPR(delta_v=-0.1)) == hash(TOPR(delta_v=-0.3))  # host-only: one compile


# ----------------------------------------------------------------------- registry, config


def test_config_builds_each_registered_loss():
    assert LOSSES == ("asymre", "grpo", "is_reinforce", "cispo", "topr")
    cfg = TrainConfig(loss="cispo", cispo_eps_high=0.5)
    assert loss_from_config(cfg) == CISPO(eps_high=0.5, normalization="token")
    cfg = TrainConfig(loss="topr", delta_v=-0.2, leave_one_out=True, normalization="token")
    # delta_v is traced in the step (not compared: one compiled step); leave_one_out is static
    assert loss_from_config(cfg) == TOPR(leave_one_out=True, normalization="token")
    assert loss_from_config(cfg) != TOPR(normalization="token")
    assert loss_from_config(cfg).delta_v == -0.2 and loss_from_config(cfg).leave_one_out
    cfg = TrainConfig(loss="grpo", grpo_epsilon=0.1, kl_beta=0.04)
    assert loss_from_config(cfg) == GRPO(0.1, None, 0.04, "sequence_mean")
    cfg = TrainConfig(loss="is_reinforce", is_level="token", is_truncation=2.0)
    assert loss_from_config(cfg) == ISReinforce(truncation=2.0, level="token")
    assert [default_normalization(n) for n in LOSSES] == [
        "sequence", "sequence_mean", "sequence", "token", "sequence"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="loss must be one of asymre, grpo"):
        loss_from_config(dataclasses.replace(cfg, loss="ppo"))


def test_config_refuses_options_its_loss_does_not_read():
    base = TrainConfig(model_path="/nonexistent")
    with pytest.raises(ValueError, match=r"cispo_eps_high: must be 1 with loss=asymre \(cispo"):
        base.replace(cispo_eps_high=0.5).validate()
    with pytest.raises(ValueError, match=r"advantage_scale: must be none with loss=cispo"):
        base.replace(loss="cispo", advantage_scale="group_std").validate()
    with pytest.raises(ValueError, match="learner_distribution: must be sampling with loss=topr"):
        base.replace(loss="topr", learner_distribution="model").validate()
    with pytest.raises(ValueError, match="cispo_eps_high: must be a number >= 0|>= 0"):
        base.replace(loss="cispo", cispo_eps_high=-1.0).validate()


def test_register_a_loss_of_ones_own():
    @dataclasses.dataclass(frozen=True)
    class Sft(Loss):  # supervised learning on the positives: a loss in eight lines
        normalization: str = "token"
        options = {}
        uses_ratio = False

        def advantages(self, rewards_PxG):
            return (rewards_PxG > 0).astype(jnp.float32)

        def __call__(self, logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN):
            return -(w_BxN * adv_BxN * logprobs_BxN).sum()

    try:
        assert register_loss("test_sft")(Sft) is Sft
        cfg = TrainConfig(model_path="/nonexistent", loss="test_sft")
        assert isinstance(loss_from_config(cfg), Sft) and cfg.loss_normalization == "token"
        with pytest.raises(ValueError, match="model_path"):  # the loss name itself passes
            cfg.validate()
        assert register_loss("test_sft", Sft) is Sft  # again: the same class, fine
        with pytest.raises(ValueError, match="'test_sft' is already"):
            register_loss("test_sft", CISPO)
    finally:
        LOSS_REGISTRY.pop("test_sft", None)
    with pytest.raises(ValueError, match="'asymre' is already"):
        register_loss("asymre", Sft)
    with pytest.raises(TypeError, match="frozen dataclass deriving from Loss"):
        register_loss("mutable", dataclasses.dataclass(type("M", (Loss,), {})))
    with pytest.raises(ValueError, match="identifier"):
        register_loss("no spaces", Sft)
    bare = dataclasses.dataclass(frozen=True)(type("Bare", (Loss,), {}))
    with pytest.raises(TypeError, match="must declare `normalization: str"):
        register_loss("bare", bare)
    typo = dataclasses.dataclass(frozen=True)(type("Typo", (Sft,), {"options": {"x": "nope"}}))
    with pytest.raises(ValueError, match="Typo.options names nope, not fields of the config"):
        typo.from_config(TrainConfig())
