"""TransformersPRM on tiny random PRMs built locally: real loading, batching and scoring.

The models' scores mean nothing; what is checked is that the in-process path computes them
the way the model cards do (an independent full-logits reference), one per step, in [0, 1],
and identically for a candidate alone or inside a padded batch of 64.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ratts.endpoints.factory import build_prm  # noqa: E402
from ratts.endpoints.prm_formats import (  # noqa: E402
    PRMFolderError,
    qwen_prm_input,
)
from ratts.endpoints.prm_transformers import (  # noqa: E402
    Qwen2ForProcessRewardModel,
    TransformersPRM,
)
from ratts.errors import InputError  # noqa: E402
from ratts.local.tiny_prm import build_tiny_prm  # noqa: E402
from ratts.settings import PolicySpec, PRMSpec  # noqa: E402

QUESTION = "Tom has 3 boxes of 12 pencils and gives away 7. How many pencils are left?"
TARGET = ["3 * 12 = 36 pencils in total.", "36 - 7 = 29.", "The answer is \\boxed{29}."]


def batch_of_64() -> list[list[str]]:
    """64 candidates of different lengths and step counts (so padding really happens)."""
    out: list[list[str]] = []
    for i in range(64):
        steps = [f"Step {k + 1}: we add {i} and {k} to get {i + k}." for k in range(1 + i % 5)]
        if i % 7 == 0:
            steps.append("So the answer is " + "very " * (i % 13) + f"\\boxed{{{i}}}.")
        out.append(steps)
    return out


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_prm(tmp_path_factory.mktemp("tiny-qwen-prm"), "qwen2.5-math-prm")


@pytest.fixture(scope="module")
def shepherd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_prm(tmp_path_factory.mktemp("tiny-shepherd-prm"), "math-shepherd")


def spec_for(folder: Path, **fields: object) -> PRMSpec:
    return PRMSpec(name="tiny", kind="transformers", model=str(folder), **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def qwen_prm(qwen_dir: Path) -> TransformersPRM:
    return TransformersPRM(spec_for(qwen_dir))


@pytest.fixture(scope="module")
def shepherd_prm(shepherd_dir: Path) -> TransformersPRM:
    return TransformersPRM(spec_for(shepherd_dir))


def reference_qwen(folder: Path, question: str, steps: list[str]) -> list[float]:
    """The model card's recipe: full forward, softmax, positive class at each <extra_0>."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = Qwen2ForProcessRewardModel.from_pretrained(str(folder)).eval()
    messages = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        probs = torch.softmax(model(ids)[0], dim=-1)
    tag = tok.convert_tokens_to_ids("<extra_0>")
    return probs[ids[0] == tag][:, 1].tolist()


def reference_shepherd(folder: Path, question: str, steps: list[str]) -> list[float]:
    """Math-Shepherd's recipe: LM logits of [+, -] at each step tag, softmax, take +."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    good, bad = (tok("+", add_special_tokens=False)["input_ids"][-1],
                 tok("-", add_special_tokens=False)["input_ids"][-1])  # fmt: skip
    tag = tok("ки", add_special_tokens=False)["input_ids"][-1]
    text = f"{question} " + "\n".join(f"{s} ки" for s in steps)
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0][:, [good, bad]]
    return torch.softmax(logits, dim=-1)[ids[0] == tag][:, 0].tolist()


# ---------------------------------------------------------------- formats and folders


def test_tiny_tokenizer_chat_template_renders_like_ratts(qwen_prm: TransformersPRM) -> None:
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "<extra_0>".join(TARGET) + "<extra_0>"},
    ]
    rendered = qwen_prm.tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == qwen_prm_input(QUESTION, TARGET)


def test_formats_are_read_from_the_folder(
    qwen_prm: TransformersPRM, shepherd_prm: TransformersPRM
) -> None:
    assert qwen_prm.format.name == "qwen2.5-math-prm"
    assert qwen_prm.tokenizer.convert_ids_to_tokens(qwen_prm.step_tag_id) == "<extra_0>"
    assert shepherd_prm.format.name == "math-shepherd"
    assert shepherd_prm.tokenizer.convert_ids_to_tokens(shepherd_prm.step_tag_id) == "ки"
    assert qwen_prm.context == 512  # max_position_embeddings of the tiny model
    head = qwen_prm._head
    assert isinstance(head, torch.nn.Module)
    body_params = sum(p.numel() for p in qwen_prm._body.parameters())
    assert qwen_prm.params == body_params + sum(p.numel() for p in head.parameters())


# ---------------------------------------------------------------- scores


@pytest.mark.parametrize("which", ["qwen", "shepherd"])
async def test_scores_match_the_model_card_recipe(
    which: str,
    qwen_prm: TransformersPRM,
    shepherd_prm: TransformersPRM,
    qwen_dir: Path,
    shepherd_dir: Path,
) -> None:
    prm, folder = (qwen_prm, qwen_dir) if which == "qwen" else (shepherd_prm, shepherd_dir)
    reference = reference_qwen if which == "qwen" else reference_shepherd
    result = await prm.score(QUESTION, [TARGET])
    expected = reference(folder, QUESTION, TARGET)
    assert len(result.scores[0]) == len(TARGET) == len(expected)
    assert result.scores[0] == pytest.approx(expected, abs=1e-5)
    assert all(0.0 <= s <= 1.0 for s in result.scores[0])
    # random weights, but not a constant: the steps get different scores
    assert max(result.scores[0]) - min(result.scores[0]) > 1e-3


@pytest.mark.parametrize("which", ["qwen", "shepherd"])
async def test_alone_or_in_a_batch_of_64_gives_the_same_scores(
    which: str, qwen_prm: TransformersPRM, shepherd_prm: TransformersPRM
) -> None:
    prm = qwen_prm if which == "qwen" else shepherd_prm
    others = batch_of_64()
    alone = (await prm.score(QUESTION, [TARGET])).scores[0]
    for position in (0, 31, 63):
        batch = [*others[:position], TARGET, *others[position + 1 :]]
        assert len(batch) == 64
        result = await prm.score(QUESTION, batch)
        assert [len(s) for s in result.scores] == [len(c) for c in batch]
        assert all(0.0 <= s <= 1.0 for row in result.scores for s in row)
        assert result.scores[position] == pytest.approx(alone, abs=1e-5)
    singles = [(await prm.score(QUESTION, [c])).scores[0] for c in others[:8]]
    together = (await prm.score(QUESTION, others[:8])).scores
    for one, many in zip(singles, together, strict=True):
        assert many == pytest.approx(one, abs=1e-5)


async def test_max_batch_tokens_packs_several_passes_with_equal_scores(qwen_dir: Path) -> None:
    candidates = batch_of_64()
    wide = TransformersPRM(spec_for(qwen_dir))
    narrow = TransformersPRM(spec_for(qwen_dir, max_batch_tokens=600))
    assert len(wide._batches({i: wide._encode(QUESTION, c) for i, c in enumerate(candidates)})) == 1
    packed = narrow._batches({i: narrow._encode(QUESTION, c) for i, c in enumerate(candidates)})
    assert len(packed) > 5
    assert sorted(i for b in packed for i in b) == list(range(64))
    for batch in packed:
        longest = max(len(narrow._encode(QUESTION, candidates[i]).ids) for i in batch)
        assert longest * len(batch) <= 600 or len(batch) == 1
    a = (await wide.score(QUESTION, candidates)).scores
    b = (await narrow.score(QUESTION, candidates)).scores
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, abs=1e-5)


async def test_usage_counts_real_tokens(qwen_prm: TransformersPRM) -> None:
    result = await qwen_prm.score(QUESTION, [TARGET, [], TARGET[:1]])
    tokens = len(qwen_prm.tokenizer(qwen_prm_input(QUESTION, TARGET))["input_ids"]) + len(
        qwen_prm.tokenizer(qwen_prm_input(QUESTION, TARGET[:1]))["input_ids"]
    )
    u = result.usage
    assert u.prm_tokens == tokens and u.prm_requests == 1 and u.prm_truncated == 0
    assert u.flops == pytest.approx(2 * qwen_prm.params * tokens)
    assert u.request_seconds > 0


# ---------------------------------------------------------------- bad input


async def test_empty_step_lists_get_no_scores_and_no_work(qwen_prm: TransformersPRM) -> None:
    result = await qwen_prm.score(QUESTION, [[], TARGET, []])
    assert [len(s) for s in result.scores] == [0, 3, 0]
    nothing = await qwen_prm.score(QUESTION, [[], []])
    assert nothing.scores == [[], []]
    assert nothing.usage.prm_requests == 0 and nothing.usage.prm_tokens == 0
    with pytest.raises(InputError, match="empty question"):
        await qwen_prm.score("   ", [TARGET])


async def test_a_long_question_is_cut_from_the_left_and_steps_are_kept(qwen_dir: Path) -> None:
    prm = TransformersPRM(spec_for(qwen_dir, max_context=120))
    long_question = "Long preamble word " * 60 + "What is left at the end?"
    result = await prm.score(long_question, [TARGET, TARGET[:1]])
    assert [len(s) for s in result.scores] == [3, 1]
    assert result.usage.prm_truncated == 2
    encoded = prm._encode(long_question, TARGET)
    assert encoded.truncated and len(encoded.ids) <= 120
    text = prm.tokenizer.decode(encoded.ids)
    assert "What is left at the end?" in text  # the end of the question survives
    assert text.count("Long preamble word") < 60
    assert all(step in text for step in TARGET)
    short = await prm.score("What is left at the end?", [TARGET])
    assert short.usage.prm_truncated == 0


async def test_steps_longer_than_the_context_are_a_clear_error(qwen_dir: Path) -> None:
    prm = TransformersPRM(spec_for(qwen_dir, max_context=64))
    with pytest.raises(InputError, match=r"^PRM 'tiny': the steps alone do not fit its context"):
        await prm.score(QUESTION, [["a very long step " * 40]])


def test_a_folder_that_is_not_a_prm(tmp_path: Path, qwen_dir: Path) -> None:
    with pytest.raises(PRMFolderError, match=r"is not a model folder \(no config.json\)$"):
        TransformersPRM(spec_for(tmp_path / "missing"))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(PRMFolderError, match=r"is not a PRM \(architecture: BertModel\)"):
        TransformersPRM(spec_for(bert))
    (bert / "config.json").write_text("{not json")
    with pytest.raises(PRMFolderError, match=r"config\.json is not a model config"):
        TransformersPRM(spec_for(bert))
    with pytest.raises(PRMFolderError, match=r"holds a qwen2\.5-math-prm PRM"):
        TransformersPRM(spec_for(qwen_dir, format="math-shepherd"))
    plain = build_tiny_prm(tmp_path / "plain-lm", "math-shepherd", step_tag=False)
    with pytest.raises(PRMFolderError, match=r"splits the step tag 'ки'; this is not a math-sh"):
        TransformersPRM(spec_for(plain))
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    for f in qwen_dir.iterdir():
        if not f.name.endswith(".safetensors"):
            (no_weights / f.name).write_bytes(f.read_bytes())
    with pytest.raises(PRMFolderError, match=r"cannot load .* as a qwen2\.5-math-prm PRM"):
        TransformersPRM(spec_for(no_weights))


def test_factory_builds_a_transformers_prm(qwen_dir: Path) -> None:
    prm = build_prm(spec_for(qwen_dir))
    assert isinstance(prm, TransformersPRM) and prm.name == "tiny"


async def test_beam_search_on_the_sim_policy_with_the_in_process_prm(
    qwen_dir: Path, weak_policy_spec: PolicySpec
) -> None:
    """A real strategy run end to end: every candidate step gets a tiny-PRM score, and a
    question cut to fit the PRM's context shows in the Outcome's usage."""
    from ratts.endpoints.policy import PolicyClient
    from ratts.strategies import get_strategy
    from ratts.types import Problem, StrategyParams

    question = "Please think about it. " * 40 + QUESTION
    prm = TransformersPRM(spec_for(qwen_dir, max_context=500, params=1e6))
    params = StrategyParams(n=4, beam_width=2, max_steps=3, seed=3)
    async with PolicyClient(weak_policy_spec) as policy:
        outcome = await get_strategy("beam_search").run(
            Problem(id="p", question=question), policy, prm, params
        )
    scored = [c for c in outcome.candidates if c.steps]
    assert scored and all(len(c.step_scores) == len(c.steps) for c in scored)
    assert all(0.0 <= s <= 1.0 for c in scored for s in c.step_scores)
    assert outcome.usage.prm_requests >= 2 and outcome.usage.prm_tokens > 0
    assert outcome.usage.prm_truncated > 0
    assert outcome.usage.flops >= 2 * 1e6 * outcome.usage.prm_tokens
