"""The PRM input formats ratts speaks: how a (question, steps) pair becomes the model's text.

Both PRM backends (vLLM ``/pooling`` and in-process transformers) render with these
functions, so the two see byte-identical inputs and their scores can be compared.

- ``qwen2.5-math-prm`` (Qwen2.5-Math-PRM-7B/72B, their model card): the Qwen2.5 chat
  template with the default math system prompt, the question as the user turn and the
  steps as the assistant turn, each followed by ``<extra_0>``; ``add_generation_prompt`` is
  off, so the text ends ``<|im_end|>\\n``. A token-classification head gives
  ``[p_negative, p_positive]`` at each ``<extra_0>``.
- ``math-shepherd`` (peiyi9979/math-shepherd-mistral-7b-prm): plain ``question + " " +
  steps``, each step followed by `` ки`` and steps separated by a newline; the causal LM's
  next-token probabilities of ``+`` (good) and ``-`` (bad) at each ``ки``, renormalised over
  the two, give the step score.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ratts.errors import ConfigError
from ratts.settings import PRMFormatName

QWEN_STEP_TAG = "<extra_0>"
QWEN_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
SHEPHERD_STEP_TAG = "ки"
SHEPHERD_GOOD = "+"
SHEPHERD_BAD = "-"

# Column of the positive ("this step is right") probability in each row a pooling server
# returns. Qwen's head is [negative, positive]; for Math-Shepherd, ``ratts models serve-prm``
# asks vLLM for the tokens in the order [bad, good], so column 1 is positive for both.
POSITIVE_COLUMN = 1


@dataclass(frozen=True, slots=True)
class PRMFormat:
    """The facts of one PRM format (which tag marks a step, which tokens score it)."""

    name: PRMFormatName
    step_tag: str
    head: Literal["token_classification", "lm_tokens"]
    good_token: str | None = None  # lm_tokens only
    bad_token: str | None = None

    def render(self, question: str, steps: Sequence[str]) -> str:
        """The model's input text; step tags inside the text are dropped so the number of
        rewards always equals the number of steps."""
        if self.name == "qwen2.5-math-prm":
            return qwen_prm_input(question, steps)
        return shepherd_prm_input(question, steps)


FORMATS: dict[str, PRMFormat] = {
    "qwen2.5-math-prm": PRMFormat("qwen2.5-math-prm", QWEN_STEP_TAG, "token_classification"),
    "math-shepherd": PRMFormat(
        "math-shepherd", SHEPHERD_STEP_TAG, "lm_tokens", SHEPHERD_GOOD, SHEPHERD_BAD
    ),
}


class PRMFolderError(ConfigError):
    """A folder that cannot be loaded as a PRM of a known format."""


def detect_format(folder: Path, declared: PRMFormatName | None = None) -> PRMFormat:
    """The format of a PRM folder, from the architecture in its ``config.json``.

    A ``*ForProcessRewardModel`` is a Qwen2.5-Math-PRM; a ``*ForCausalLM`` can only be a
    Math-Shepherd style PRM (whether it is one shows in its tokenizer: see the step tag
    check of the loaders). ``declared`` (the settings' ``format``) must agree.
    """
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise PRMFolderError(f"{folder} is not a model folder (no config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        architectures = [str(a) for a in config.get("architectures") or []]
    except (OSError, ValueError, AttributeError, TypeError):
        raise PRMFolderError(f"{folder}: config.json is not a model config") from None
    if any(a.endswith("ForProcessRewardModel") for a in architectures):
        found = FORMATS["qwen2.5-math-prm"]
    elif any(a.endswith("ForCausalLM") for a in architectures):
        found = FORMATS["math-shepherd"]
    else:
        shown = ", ".join(architectures) or "none given"
        raise PRMFolderError(
            f"{folder} is not a PRM (architecture: {shown}); expected a *ForProcessRewardModel "
            "(qwen2.5-math-prm) or a *ForCausalLM with a step tag (math-shepherd)"
        )
    if declared is not None and declared != found.name:
        raise PRMFolderError(
            f"{folder} holds a {found.name} PRM ({', '.join(architectures)}), "
            f"but the settings say format = {declared!r}"
        )
    return found


def _clean(text: str, tag: str) -> str:
    return text.replace(tag, "").strip()


def qwen_prm_input(question: str, steps: Sequence[str]) -> str:
    """The Qwen2.5-Math-PRM text for one candidate (its chat template, rendered)."""
    solution = "".join(_clean(step, QWEN_STEP_TAG) + QWEN_STEP_TAG for step in steps)
    return (
        f"<|im_start|>system\n{QWEN_SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{_clean(question, QWEN_STEP_TAG)}<|im_end|>\n"
        f"<|im_start|>assistant\n{solution}<|im_end|>\n"
    )


def shepherd_prm_input(question: str, steps: Sequence[str]) -> str:
    """The Math-Shepherd text for one candidate: ``question step1 ки\\nstep2 ки``."""
    solution = "\n".join(f"{_clean(step, SHEPHERD_STEP_TAG)} {SHEPHERD_STEP_TAG}" for step in steps)
    return f"{_clean(question, SHEPHERD_STEP_TAG)} {solution}"


def left_cuts(question_tokens: int, total: int, context: int) -> Generator[int, int, None]:
    """How many leading question tokens to drop, in turn, until a candidate fits ``context``.

    The one truncation rule of both backends: cut from the left of the question, never a
    step. Yields a cut; the caller renders the shortened question, counts its tokens and
    sends the count back (re-tokenizing at the cut can shift a token or two, so the next
    cut drops a little more). Ends when even the whole question would not be enough.
    """
    excess = total - context
    while excess < question_tokens:
        total = yield excess
        excess += max(1, total - context)


def step_tag_id(tokenizer: Any, fmt: PRMFormat) -> int:
    """The id of the format's step tag; PRMFolderError if it is not one token."""
    ids = tokenizer(fmt.step_tag, add_special_tokens=False)["input_ids"]
    if not ids:
        raise PRMFolderError(f"the tokenizer has no token for the step tag {fmt.step_tag!r}")
    tag = int(ids[-1])  # a sentencepiece tokenizer may put a space marker first
    if str(tokenizer.convert_ids_to_tokens(tag)).lstrip("▁Ġ") != fmt.step_tag:
        raise PRMFolderError(
            f"the tokenizer splits the step tag {fmt.step_tag!r}; this is not a {fmt.name} PRM"
        )
    return tag


def shepherd_token_ids(tokenizer: Any, fmt: PRMFormat) -> tuple[int, int]:
    """Ids of the good and bad tokens, as Math-Shepherd picks them (last id of each)."""
    found: list[int] = []
    for token in (fmt.good_token, fmt.bad_token):
        ids = tokenizer(token or "", add_special_tokens=False)["input_ids"]
        if not ids:
            raise PRMFolderError(f"the tokenizer has no token for {token!r}")
        found.append(int(ids[-1]))
    return found[0], found[1]
