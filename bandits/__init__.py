"""Vectorised K-armed bandit simulator for AsymRE (jit + vmap + lax.scan)."""
