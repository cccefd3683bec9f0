"""Tests for llm.sampler.generate: parity with transformers, sampling law, stopping, caching."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from llm import sampler_args
from llm.models.config import ModelConfig
from llm.models.hf_io import load_hf
from llm.models.tiny import make_tiny_checkpoint, random_model, tiny_config
from llm.models.transformer import Transformer
from llm.sampler import generate, generate_from_state

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPTS = [
    [5, 17, 99, 3, 250, 8, 41],
    [12],
    [77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89],
    [200, 1],
]
PROMPTS_SMALL = [[1, 2, 3, 4, 5, 6], [7], [8, 9, 10]]
VOCAB = 32
N_NEW = 8  # most tests share this, the model and PROMPTS_SMALL's bucket: one compile per mode


@pytest.fixture(scope="module")
def model() -> Transformer:
    """A tiny random Llama (vocabulary 32) shared by the tests so compiled programs are reused."""
    config = ModelConfig(
        model_type="llama",
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=64,
        initializer_range=0.15,
    )
    return random_model(config, seed=0)


def full_logits(model, sequences, rows=32, length=32):
    """Full-forward float32 logits [len(seq), V] of each sequence (one compiled shape)."""
    graphdef, state = nnx.split(model)
    tokens = np.zeros((rows, length), np.int32)
    out = []
    for start in range(0, len(sequences), rows):
        chunk = sequences[start : start + rows]
        tokens[:] = 0
        for i, seq in enumerate(chunk):
            tokens[i, : len(seq)] = seq  # right padding: causal, so earlier logits unchanged
        logits = np.asarray(_jit_forward(graphdef, state, tokens))
        out += [logits[i, : len(seq)] for i, seq in enumerate(chunk)]
    return out


@functools.partial(jax.jit, static_argnums=0)
def _jit_forward(graphdef, state, tokens_BxT):
    return nnx.merge(graphdef, state)(tokens_BxT)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])  # gemma3: windows, 2 RoPEs
def test_greedy_matches_transformers_generate(tmp_path, family):
    path = make_tiny_checkpoint(tmp_path / family, family=family, seed=0)
    model, config = load_hf(path, dtype="float32")
    out = generate(model, PROMPTS, max_new_tokens=32, temperature=0.0)
    assert out.tokens.shape == (len(PROMPTS), 32)
    np.testing.assert_array_equal(out.lengths, 32)
    assert not np.asarray(out.finished).any()

    reference = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    reference.generation_config.eos_token_id = None
    reference.generation_config.pad_token_id = 0
    for prompt, tokens in zip(PROMPTS, np.asarray(out.tokens), strict=True):
        with torch.no_grad():
            expected = reference.generate(
                torch.tensor([prompt]),
                max_new_tokens=32,
                do_sample=False,
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            )[0, len(prompt) :].numpy()
        np.testing.assert_array_equal(tokens, expected)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mistral", "gemma3"])
def test_sliding_window_greedy_matches_own_forward(family):
    """Left-padded prompts + completions longer than the window (8): the KV-cache sampler's
    greedy tokens and log-probs are those of the full forward over each unpadded sequence."""
    model = random_model(tiny_config(family), seed=4)
    window = model.config.sliding_window
    prompts = [list(range(40, 51)), [7, 9, 11], [3, 1, 4, 1, 5, 9]]
    out = generate(model, prompts, max_new_tokens=12, temperature=0)
    tokens, logprobs = np.asarray(out.tokens), np.asarray(out.logprobs)
    sequences = [p + t.tolist() for p, t in zip(prompts, tokens, strict=True)]
    assert min(len(s) for s in sequences) > window + 4
    for b, (prompt, logits) in enumerate(zip(prompts, full_logits(model, sequences), strict=True)):
        logits_NxV = logits[len(prompt) - 1 : -1]
        np.testing.assert_array_equal(tokens[b], np.argmax(logits_NxV, -1))
        expected = np.asarray(jax.nn.log_softmax(logits_NxV))[np.arange(12), tokens[b]]
        np.testing.assert_allclose(logprobs[b], expected, atol=2e-5)


def filtered_logprobs(logits_V, temperature, top_k, top_p):
    """log q over the vocabulary for the sampler's documented law, in float64 numpy."""
    z = np.asarray(logits_V, np.float64) / temperature
    order = np.argsort(-z, kind="stable")
    keep = np.zeros(z.shape, bool)
    keep[order[: top_k if top_k > 0 else z.size]] = True
    z = np.where(keep, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    sorted_p = p[order]
    mass_before = np.cumsum(sorted_p) - sorted_p
    nucleus = np.zeros(z.shape, bool)
    nucleus[order[(mass_before < top_p) | (np.arange(z.size) == 0)]] = True
    z = np.where(nucleus, z, -np.inf)
    return z - z.max() - np.log(np.exp(z - z.max()).sum())


@pytest.mark.slow
@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.7, 0, 0.8), (1.3, 6, 0.9)])
def test_sampled_frequencies_match_target_distribution(model, temperature, top_k, top_p):
    prompt = [3, 1, 4, 1, 5]
    draws = 2048
    out = generate(
        model,
        [prompt] * draws,
        max_new_tokens=2,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        key=jax.random.key(7),
    )
    tokens = np.asarray(out.tokens)

    # First token: every row draws from the same q(. | prompt).
    target = np.exp(
        filtered_logprobs(full_logits(model, [prompt])[0][-1], temperature, top_k, top_p)
    )
    assert (target > 0).sum() >= 3, "test needs a non-trivial nucleus"
    assert (target > 0).sum() < VOCAB, "test needs some tokens filtered out"
    counts = np.bincount(tokens[:, 0], minlength=VOCAB)
    assert counts[target == 0].sum() == 0, "drew a token outside the top-k / nucleus set"
    chi2 = stats.chisquare(counts[target > 0], draws * target[target > 0])
    assert chi2.pvalue > 1e-3, (counts, draws * target)

    # Second token: expected counts are the sum over rows of q(. | prompt, y_0).
    firsts, how_many = np.unique(tokens[:, 0], return_counts=True)
    rows = full_logits(model, [prompt + [int(t)] for t in firsts])
    expected = sum(
        n * np.exp(filtered_logprobs(r[-1], temperature, top_k, top_p))
        for r, n in zip(rows, how_many, strict=True)
    )
    counts = np.bincount(tokens[:, 1], minlength=VOCAB)
    assert counts[expected == 0].sum() == 0
    chi2 = stats.chisquare(counts[expected > 0], expected[expected > 0])
    assert chi2.pvalue > 1e-3, (counts, expected)


@pytest.mark.slow
@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.8, 0, 0.9), (1.0, 5, 0.9)])
def test_logprobs_are_those_of_the_sampling_distribution(model, temperature, top_k, top_p):
    out = generate(
        model,
        PROMPTS_SMALL,
        max_new_tokens=N_NEW,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        key=jax.random.key(3),
    )
    assert (np.asarray(out.lengths) == N_NEW).all()
    sequences = [p + t.tolist() for p, t in zip(PROMPTS_SMALL, np.asarray(out.tokens), strict=True)]
    for prompt, tokens, logprobs, logits in zip(
        PROMPTS_SMALL,
        np.asarray(out.tokens),
        np.asarray(out.logprobs),
        full_logits(model, sequences),
        strict=True,
    ):
        expected = [
            filtered_logprobs(logits[len(prompt) - 1 + t], temperature, top_k, top_p)[tokens[t]]
            for t in range(N_NEW)
        ]
        np.testing.assert_allclose(logprobs, expected, atol=2e-5)


def test_greedy_logprobs_are_model_logprobs_and_top_k_one_is_greedy(model):
    greedy = generate(model, PROMPTS_SMALL, max_new_tokens=N_NEW, temperature=0)
    top1 = generate(
        model, PROMPTS_SMALL, max_new_tokens=N_NEW, temperature=1.5, top_k=1, key=jax.random.key(0)
    )
    np.testing.assert_array_equal(greedy.tokens, top1.tokens)
    np.testing.assert_array_equal(greedy.logprobs, top1.logprobs)
    sequences = [
        p + t.tolist() for p, t in zip(PROMPTS_SMALL, np.asarray(greedy.tokens), strict=True)
    ]
    for b, (prompt, logits) in enumerate(
        zip(PROMPTS_SMALL, full_logits(model, sequences), strict=True)
    ):
        logits_NxV = logits[len(prompt) - 1 : -1]
        tokens = np.asarray(greedy.tokens[b])
        np.testing.assert_array_equal(tokens, np.argmax(logits_NxV, -1))
        expected = np.asarray(jax.nn.log_softmax(logits_NxV))[np.arange(N_NEW), tokens]
        np.testing.assert_allclose(greedy.logprobs[b], expected, atol=1e-5)


def test_left_padding_does_not_change_a_completion(model):
    together = generate(model, PROMPTS_SMALL, max_new_tokens=N_NEW, temperature=0)
    for i, prompt in enumerate(PROMPTS_SMALL):
        alone = generate(model, [prompt], max_new_tokens=N_NEW, temperature=0, min_batch_bucket=4)
        np.testing.assert_array_equal(alone.tokens[0], together.tokens[i])
        np.testing.assert_allclose(alone.logprobs[0], together.logprobs[i], atol=1e-5)


@pytest.mark.slow
def test_eos_stops_rows_and_sets_lengths_and_finished(model):
    free = np.asarray(generate(model, PROMPTS_SMALL, max_new_tokens=N_NEW, temperature=0).tokens)
    eos = int(free[0, 4])
    first_hit = [int(np.argmax(row == eos)) if (row == eos).any() else None for row in free]
    out = generate(
        model,
        PROMPTS_SMALL,
        max_new_tokens=N_NEW,
        temperature=0,
        eos_token_id=eos,
        pad_token_id=VOCAB - 1,
    )
    for b, hit in enumerate(first_hit):
        length = N_NEW if hit is None else hit + 1
        assert int(out.lengths[b]) == length
        assert bool(out.finished[b]) == (hit is not None)
        np.testing.assert_array_equal(out.tokens[b, :length], free[b, :length])
        assert (np.asarray(out.tokens[b, length:]) == VOCAB - 1).all()
        assert (np.asarray(out.logprobs[b, length:]) == 0).all()
        assert (np.asarray(out.logprobs[b, :length]) < 0).all()
    assert first_hit[0] <= 4 and int(out.lengths[0]) < N_NEW
    # A list of EOS ids: each row stops at the first of them.
    two = generate(
        model,
        PROMPTS_SMALL,
        max_new_tokens=N_NEW,
        temperature=0,
        eos_token_id=[eos, int(free[1, 0])],
    )
    assert int(two.lengths[1]) == 1 and bool(two.finished[1])
    # Every row stops at once: EOS = the first token of each row.
    firsts = sorted({int(t) for t in free[:, 0]})
    stop = generate(model, PROMPTS_SMALL, max_new_tokens=N_NEW, temperature=0, eos_token_id=firsts)
    np.testing.assert_array_equal(stop.lengths, 1)
    assert np.asarray(stop.finished).all()


def test_decode_loop_stops_when_every_row_has_ended(model):
    """``steps``, the decoding steps the loop ran, is the longest row's length: 1 when every
    row ends at its first token, under N_NEW when every row ends early, N_NEW when a row never
    ends. (A loop that always ran N_NEW steps would give the same tokens: only the count
    tells the early exit happened.)"""
    free = np.asarray(generate(model, PROMPTS_SMALL, max_new_tokens=N_NEW, temperature=0).tokens)
    row0 = set(free[0].tolist())
    cases = {  # name: (EOS ids, (fewest, most) steps the loop may run)
        "every row at its first token": ({int(t) for t in free[:, 0]}, (1, 1)),
        "every row early": ({int(free[0, 2]), int(free[1, 0]), int(free[2, 1])}, (1, 3)),
        "no row": (set(range(VOCAB)) - set(free.ravel().tolist()), (N_NEW, N_NEW)),
        "all but row 0": ({int(t) for t in free[1:, 0]} - row0, (N_NEW, N_NEW)),
    }
    for name, (eos, (fewest, most)) in cases.items():
        assert eos, f"{name}: the model's tokens leave no EOS id for this case"
        hits = np.isin(free, sorted(eos))
        lengths = np.where(hits.any(1), hits.argmax(1) + 1, N_NEW)  # greedy: free's prefix
        out = generate(
            model, PROMPTS_SMALL, max_new_tokens=N_NEW, temperature=0, eos_token_id=sorted(eos)
        )
        np.testing.assert_array_equal(out.lengths, lengths, err_msg=name)
        assert int(out.steps) == lengths.max(), name
        assert fewest <= int(out.steps) <= most, name


@pytest.mark.slow
def test_deterministic_for_a_key_and_different_across_keys(model):
    kwargs = dict(max_new_tokens=N_NEW, temperature=0.8, top_k=5, top_p=0.9)
    a = generate(model, PROMPTS_SMALL, key=jax.random.key(1), **kwargs)
    b = generate(model, PROMPTS_SMALL, key=jax.random.key(1), **kwargs)
    c = generate(model, PROMPTS_SMALL, key=jax.random.key(2), **kwargs)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.tokens, c.tokens)
    # A row's draws depend on the key, its index and its prompt only, not on the bucket.
    d = generate(model, PROMPTS_SMALL + [[5, 5]] * 2, key=jax.random.key(1), **kwargs)
    np.testing.assert_array_equal(a.tokens, d.tokens[:3])


def test_row_keys_replace_the_key_and_follow_their_row(model):
    """``row_keys`` = fold_in(key, b) is the ``key`` call; a row's draws follow its own key,
    not its index (rows reordered with their keys come out reordered)."""
    kwargs = dict(max_new_tokens=N_NEW, temperature=0.9, top_p=0.9)
    key = jax.random.key(5)
    rows = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, np.arange(len(PROMPTS_SMALL)))
    by_key = generate(model, PROMPTS_SMALL, key=key, **kwargs)
    by_rows = generate(model, PROMPTS_SMALL, row_keys=rows, **kwargs)
    for x, y in zip(by_key, by_rows, strict=True):
        np.testing.assert_array_equal(x, y)
    order = np.array([2, 0, 1])
    moved = generate(model, [PROMPTS_SMALL[i] for i in order], row_keys=rows[order], **kwargs)
    np.testing.assert_array_equal(moved.tokens, np.asarray(by_key.tokens)[order])
    # another key for row 0 changes row 0 only
    other = generate(model, PROMPTS_SMALL, row_keys=rows.at[0].set(key), **kwargs)
    assert not np.array_equal(other.tokens[0], by_key.tokens[0])
    np.testing.assert_array_equal(other.tokens[1:], by_key.tokens[1:])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "num_samples", "kwargs"),
    [
        ("llama", 4, dict(temperature=0.9, top_p=0.8)),
        ("llama", 3, dict(temperature=0.9, top_p=0.8)),  # 9 of 16 rows real, 4 prompt rows
        ("llama", 4, dict(temperature=0.0)),
        ("mistral", 3, dict(temperature=1.2, top_k=9, top_p=0.9)),  # window 8 < prompt + N
    ],
)
def test_num_samples_shares_the_prefill_and_equals_repeated_prompts(
    model, family, num_samples, kwargs
):
    if family != "llama":
        model = random_model(tiny_config(family), seed=1)
    graphdef, state = nnx.split(model)
    prompts = [[1, 2, 3, 4, 5, 6], [7], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]
    repeated = [p for p in prompts for _ in range(num_samples)]
    kwargs = dict(max_new_tokens=N_NEW, key=jax.random.key(7), pad_token_id=2, **kwargs)
    free = generate_from_state(graphdef, state, repeated, **kwargs).tokens
    eos = int(free[0, 3])  # ragged stops: row 0 within 4 tokens, not every row
    old = generate_from_state(graphdef, state, repeated, eos_token_id=eos, **kwargs)
    new = generate_from_state(
        graphdef, state, prompts, eos_token_id=eos, num_samples=num_samples, **kwargs
    )
    assert new.tokens.shape == (len(repeated), N_NEW)
    np.testing.assert_array_equal(new.tokens, old.tokens)
    np.testing.assert_array_equal(new.lengths, old.lengths)
    np.testing.assert_array_equal(new.finished, old.finished)
    # Log-probs: equal to round-off (prefilling 4 rows instead of 16 can change XLA's CPU
    # kernels by a few ulps, as the bucket alone does in the old call).
    np.testing.assert_allclose(new.logprobs, old.logprobs, rtol=1e-6, atol=1e-6)
    assert bool(new.finished[0]) and not np.asarray(new.finished).all()
    if kwargs["temperature"] > 0:  # the G samples of a prompt differ
        assert len({tuple(np.asarray(t)) for t in new.tokens[:num_samples]}) > 1


@pytest.mark.slow
def test_same_bucket_does_not_recompile_and_new_state_does_not_retrace(model, count_compiles):
    graphdef, state = nnx.split(model)
    kwargs = dict(max_new_tokens=N_NEW, temperature=1.0, top_k=5, top_p=0.9, key=jax.random.key(0))
    generate_from_state(graphdef, state, PROMPTS_SMALL, eos_token_id=2, **kwargs)
    # 4 prompts (bucket 4, like 3) of other lengths (bucket 16), new weights, another EOS.
    new_state = jax.tree.map(lambda x: x * 1.01, state)
    jax.block_until_ready(new_state)
    count_compiles.clear()
    out = generate_from_state(
        graphdef, new_state, [[1] * 11, [2], [3, 3], [4] * 16], eos_token_id=9, **kwargs
    )
    assert out.tokens.shape == (4, N_NEW)
    assert not count_compiles, count_compiles
    # A batch of 9 is a new bucket (16): exactly one new program each.
    generate_from_state(graphdef, state, [[1]] * 9, eos_token_id=2, **kwargs)
    assert count_compiles["jit(_prefill)"] == count_compiles["jit(_decode)"] == 1, count_compiles


def test_positions_are_checked_up_to_the_limit(model):
    """prompt + max_new_tokens may reach max_position_embeddings, not pass it."""
    config = model.config.replace(max_position_embeddings=20)
    sampler_args.check_positions(config, 12, 8)  # exactly the limit
    with pytest.raises(ValueError, match=r"\(13 tokens\) \+ max_new_tokens \(8\) = 21 .* = 20"):
        sampler_args.check_positions(config, 13, 8)


@pytest.mark.parametrize(
    ("prompts", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, "at least one prompt"),
        ([[1], []], {}, ValueError, r"prompts\[1\] is empty"),
        ([[1, VOCAB]], {}, ValueError, "outside"),
        ([[[1, 2]]], {}, TypeError, "flat list"),
        ("abc", {}, TypeError, "list of token-id lists"),
        ([[1]], {"temperature": 1.0, "key": None}, ValueError, "key"),
        ([[1]], {"temperature": -1.0}, ValueError, "temperature"),
        ([[1]], {"top_p": 0.0}, ValueError, "top_p"),
        ([[1]], {"top_k": VOCAB + 1}, ValueError, "top_k"),
        ([[1]], {"max_new_tokens": 0}, ValueError, "max_new_tokens"),
        ([[1]], {"eos_token_id": []}, ValueError, "eos_token_id"),
        ([[1]], {"num_samples": 0}, ValueError, "num_samples"),
        ([[1]], {"row_keys": jax.random.split(jax.random.key(0), 2)}, ValueError, r"\(1,\)"),
        ([[1]], {"row_keys": np.zeros((1, 2), np.uint32)}, TypeError, "jax.random.key"),
        (
            [[1]],
            {"row_keys": jax.random.split(jax.random.key(0), 1), "key": jax.random.key(0)},
            ValueError,
            "not both",
        ),  # fmt: skip
        ([[1, 2, 3]], {"max_new_tokens": 4094}, ValueError, "max_position_embeddings = 4096"),
    ],
)
def test_bad_input_raises(model, prompts, kwargs, error, match):
    kwargs = {"max_new_tokens": 3, "temperature": 0.0, **kwargs}
    with pytest.raises(error, match=match):
        generate(model, prompts, **kwargs)
