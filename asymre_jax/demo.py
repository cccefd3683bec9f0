"""A one-minute tour of AsymRE: ``python -m asymre_jax.demo``.

Prints (1) the advantages and the loss on a toy batch, and (2) the exact phase transition
on a 10-armed bandit: the support of the limit policy and its value as the baseline V
approaches the behaviour policy's value V^mu.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from asymre_jax import asymre_advantages, asymre_loss, theory


def main() -> None:
    rewards_PxG = jnp.array([[1.0, -1.0, -1.0, 1.0], [-1.0, -1.0, -1.0, 1.0]])
    advantages_PxG = asymre_advantages(rewards_PxG, delta_v=-0.1)
    logprobs_B = -jnp.arange(1.0, 9.0)
    loss, grad = jax.value_and_grad(asymre_loss)(logprobs_B, advantages_PxG.reshape(-1))
    print("rewards [P, G]        ", np.array2string(np.asarray(rewards_PxG)).replace("\n", ""))
    print("advantages (dv=-0.1)  ", np.array2string(np.asarray(advantages_PxG), precision=2))
    print(f"loss {float(loss):.4f}; d loss / d logprob = -A / B =", np.asarray(grad).round(4))

    with jax.enable_x64(True):
        key_r, key_mu = jax.random.split(jax.random.key(0))
        rewards_K = jax.random.uniform(key_r, (10,))
        mu_K = jax.nn.softmax(jax.random.normal(key_mu, (10,)))
        value_mu = float(mu_K @ rewards_K)
        print(f"\n10-armed bandit: V^mu = {value_mu:.3f}, best arm {float(rewards_K.max()):.3f}")
        print("   V - V^mu   support   value of the limit policy")
        for shift in (-2.0, -0.5, -0.2, -0.1, -0.05, -0.01, -1e-4):
            pi = theory.limit_policy(mu_K, rewards_K, value_mu + shift)
            size = int(theory.support_size(pi))
            print(f"   {shift:8.4f}   {size:7d}   {float(theory.value(pi, rewards_K)):.4f}")
        print("   (at V >= V^mu there is no unique limit: training collapses)")


if __name__ == "__main__":
    main()
