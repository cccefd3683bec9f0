"""Evaluation samples are common random numbers: the same completions of the same problems
whatever the chunking (`llm.rl.evaluation`) and whatever P and G the run trains with (through
`llm.rl.loop.run_evaluation`, whose chunk follows the batch size). Slow: every chunking is
new shapes to compile; the fast lane checks the keys each chunk gets (test_evaluation.py)."""

import jax
import pytest

from llm.data.datasets import make_arithmetic_examples
from llm.models.tiny import make_tiny_checkpoint
from llm.rl import evaluation, keys
from llm.rl.loop import run_evaluation
from llm.rl.state import make_setup
from llm.trainer import TrainConfig

NUM_PROBLEMS, K = 24, 4


class Recorder:
    """A reward that records every (prompt, completion) it scores, in order."""

    def __init__(self):
        self.seen = []

    def __call__(self, prompts, completions, answer, **columns):
        self.seen += list(zip(prompts, completions, strict=True))
        return [float(len(c)) for c in completions]

    def sampled(self, num_problems=NUM_PROBLEMS):
        """The sampled pass's (prompt, completion) pairs (the greedy pass comes first)."""
        assert len(self.seen) == num_problems * (1 + K)
        return self.seen[num_problems:]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "qwen2", "qwen2"))


@pytest.fixture(scope="module")
def problems():
    return make_arithmetic_examples(NUM_PROBLEMS, seed=keys.eval_data_seed(0))


def _setup(model_path, tmp_path, **kw):
    cfg = TrainConfig(
        model_path=model_path,
        task="arithmetic",
        task_kwargs={"num_examples": 64},
        max_new_tokens=4,
        eval_temperature=1.0,  # diverse samples: a changed key changes completions
        eval_top_p=1.0,
        eval_pass_k=K,
        eval_prompts=NUM_PROBLEMS,
        mesh="fsdp=1",
        mesh_subset=True,
        out_dir=str(tmp_path / "run"),
        progress=False,
        tensorboard=False,
        **kw,
    )
    recorder = Recorder()
    setup, params = make_setup(cfg, reward_fn=recorder)
    return setup, params, recorder


def _evaluate(setup, params, examples, recorder, key, chunk):
    sampling = setup.sampling._replace(temperature=1.0, top_p=1.0)
    evaluation.evaluate(
        setup.graphdef, params, examples, setup.renderer, recorder,
        key=key, sampling=sampling, num_samples=K, chunk=chunk,
    )  # fmt: skip
    return recorder.sampled(len(examples))


@pytest.mark.slow
def test_chunking_does_not_change_the_samples(model_path, tmp_path, problems):
    setup, params, _ = _setup(model_path, tmp_path, prompts_per_step=2, samples_per_prompt=2)
    key = keys.evaluation_key(keys.base_key(0))
    runs = {}
    for chunk in (K, 7 * K, 256):  # 1 problem per chunk, 7 (ragged last chunk), all at once
        runs[chunk] = _evaluate(setup, params, problems, Recorder(), key, chunk)
    assert runs[K] == runs[7 * K] == runs[256]
    completions = [c for _, c in runs[256]]
    assert len(set(completions)) > NUM_PROBLEMS  # the k samples of a problem differ
    other = _evaluate(setup, params, problems, Recorder(), jax.random.key(1), 256)
    assert other != runs[256]  # the completions do depend on the key
    # a problem's samples depend on its index, not on the problems after it
    assert _evaluate(setup, params, problems[:5], Recorder(), key, 256) == runs[256][: 5 * K]


@pytest.mark.slow
def test_runs_with_another_p_and_g_evaluate_the_same_completions(model_path, tmp_path, problems):
    """The loop's chunk is max(P * G, 64): 64 samples (16 problems) per chunk for P * G = 4,
    80 (20 problems) for P * G = 80; the samples are the same."""
    seen = []
    for P, G in ((2, 2), (20, 4)):
        setup, params, recorder = _setup(
            model_path, tmp_path, prompts_per_step=P, samples_per_prompt=G
        )
        key = keys.evaluation_key(keys.base_key(setup.cfg.seed))
        run_evaluation(setup, params, problems, key=key)
        seen.append(recorder.sampled())
    assert len(seen[0]) == NUM_PROBLEMS * K
    assert seen[0] == seen[1]
