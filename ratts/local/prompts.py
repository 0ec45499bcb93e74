"""Prompt templates for the local models, as text for the completions endpoint.

Step-wise search continues ``prompt + steps`` on ``/v1/completions``, so a chat model's
prompt is its chat template rendered to text up to the assistant's turn (SmolLM2: ChatML),
and a base model's prompt is a few-shot document that ends where a solution begins (Gemma).
Both show worked examples whose steps are separated by a blank line, write each computation
as ``a op b = c`` (what ``ArithmeticPRM`` checks) and end with ``\\boxed{}``.

Templates are ``str.format`` strings with one ``{question}`` field (braces in examples are
escaped), the shape ``PolicySpec.prompt_template`` takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ratts.local.registry import LocalModel

INSTRUCTION = (
    "Solve the problem step by step. Separate the steps with a blank line, "
    "and write the final answer as \\boxed{}."
)
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@dataclass(frozen=True, slots=True)
class Example:
    """One worked example: a question and its step-by-step solution."""

    question: str
    solution: str


EXAMPLES: tuple[Example, ...] = (
    Example(
        "Ann has 15 stickers. Ann buys 9 more stickers. Ann gives 4 stickers to a friend. "
        "How many stickers does Ann have now?",
        "Ann starts with 15 stickers.\n\nShe buys 9 more: 15 + 9 = 24.\n\n"
        "She gives away 4: 24 - 4 = 20.\n\nThe answer is \\boxed{20}.",
    ),
    Example(
        "Ben has 6 crayons. A prize multiplies the pile: Ben now has 3 times as many crayons. "
        "How many crayons does Ben have now?",
        "Ben starts with 6 crayons.\n\nHe gets 3 times as many: 6 * 3 = 18.\n\n"
        "The answer is \\boxed{18}.",
    ),
    Example(
        "Cara has 32 cards. Cara splits the cards into 4 equal piles and keeps one pile. "
        "How many cards does Cara have now?",
        "Cara starts with 32 cards.\n\nShe keeps one of 4 equal piles: 32 / 4 = 8.\n\n"
        "The answer is \\boxed{8}.",
    ),
)
QUESTION = "{question}"


def escape(text: str) -> str:
    """``text`` as a literal inside a ``str.format`` template."""
    return text.replace("{", "{{").replace("}", "}}")


def render_chatml(messages: Sequence[tuple[str, str]], *, add_generation_prompt: bool) -> str:
    """ChatML as SmolLM2's template renders it: ``<|im_start|>role\\ncontent<|im_end|>\\n``."""
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def chat_messages(
    question: str, examples: Sequence[Example] = EXAMPLES[:1]
) -> list[tuple[str, str]]:
    """System prompt, worked examples as earlier turns, then the question."""
    messages = [("system", SMOLLM_SYSTEM)]
    for ex in examples:
        messages += [("user", f"{INSTRUCTION}\n\n{ex.question}"), ("assistant", ex.solution)]
    messages.append(("user", f"{INSTRUCTION}\n\n{question}"))
    return messages


def chat_template(examples: Sequence[Example] = EXAMPLES[:1]) -> str:
    """The SmolLM2 prompt template: ChatML text ending at the assistant's turn."""
    marker = "\x00QUESTION\x00"
    text = render_chatml(chat_messages(marker, examples), add_generation_prompt=True)
    return escape(text).replace(marker, QUESTION)


def fewshot_template(examples: Sequence[Example] = EXAMPLES) -> str:
    """The base-model prompt: instruction, worked problems, then the open problem.

    Examples are separated by two blank lines, which the model's stop sequences catch.
    """
    parts = [escape(INSTRUCTION) + "\n\n\n"]
    for ex in examples:
        parts.append(f"Problem: {escape(ex.question)}\nSolution:\n{escape(ex.solution)}\n\n\n")
    parts.append(f"Problem: {QUESTION}\nSolution:\n")
    return "".join(parts)


def prompt_template(model: LocalModel) -> str:
    """The ``PolicySpec.prompt_template`` for a registry model, by its prompt style."""
    return chat_template() if model.prompt_style == "chat" else fewshot_template()
