"""Prompt templates for the local models, as text for the completions endpoint.

Step-wise search continues ``prompt + steps + separator`` on ``/v1/completions``, so a chat
model's prompt is its chat template rendered to text up to the assistant's turn (SmolLM2:
ChatML), and a base model's prompt is a few-shot document that ends where a solution begins
(Gemma). Worked examples show the step format: one computation ``a op b = c`` per step (what
``ArithmeticPRM`` checks), the last step also giving ``\\boxed{}`` (so a search is not pushed
to keep computing instead of concluding), steps joined by the model's separator.

The separator must tokenize the same at the end of a prompt as inside a text. SmolLM2's
byte-level BPE splits a blank line before a word into two ``\\n`` tokens but a trailing blank
line into one ``\\n\\n`` token the model never saw before a word, so step-wise continuations
after ``\\n\\n`` derail; its separator is ``\\n``. Gemma's tokenizer keeps ``\\n\\n`` whole
either way, so it uses blank lines.

Templates are ``str.format`` strings with one ``{question}`` field (braces in examples are
escaped), the shape ``PolicySpec.prompt_template`` takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ratts.local.registry import LocalModel

SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
FEWSHOT_GAP = "\n\n\n"  # between few-shot examples; the base model's stop sequence


@dataclass(frozen=True, slots=True)
class Example:
    """One worked example: a question and its solution as steps."""

    question: str
    steps: tuple[str, ...]

    def solution(self, separator: str) -> str:
        return separator.join(self.steps)


EXAMPLES: tuple[Example, ...] = (
    Example(
        "Ann has 15 stickers. Ann buys 9 more stickers. Ann gives 4 stickers to a friend. "
        "How many stickers does Ann have now?",
        (
            "Ann starts with 15 stickers.",
            "She buys 9 more: 15 + 9 = 24.",
            "She gives away 4: 24 - 4 = 20.",
            "The answer is \\boxed{20}.",
        ),
    ),
    Example(
        "Ben has 6 crayons. A prize multiplies the pile: Ben now has 3 times as many crayons. "
        "How many crayons does Ben have now?",
        (
            "Ben starts with 6 crayons.",
            "He gets 3 times as many: 6 * 3 = 18.",
            "The answer is \\boxed{18}.",
        ),
    ),
    Example(
        "Cara has 32 cards. Cara splits the cards into 4 equal piles and keeps one pile. "
        "How many cards does Cara have now?",
        (
            "Cara starts with 32 cards.",
            "She keeps one of 4 equal piles: 32 / 4 = 8.",
            "The answer is \\boxed{8}.",
        ),
    ),
)
QUESTION = "{question}"


def instruction(separator: str) -> str:
    layout = "on its own line" if separator == "\n" else "separated by a blank line"
    return (
        f"Solve the problem step by step, each step {layout}, "
        "and write the final answer as \\boxed{}."
    )


def escape(text: str) -> str:
    """``text`` as a literal inside a ``str.format`` template."""
    return text.replace("{", "{{").replace("}", "}}")


def render_chatml(messages: Sequence[tuple[str, str]], *, add_generation_prompt: bool) -> str:
    """ChatML as SmolLM2's template renders it: ``<|im_start|>role\\ncontent<|im_end|>\\n``."""
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def chat_messages(
    question: str, separator: str = "\n", examples: Sequence[Example] = EXAMPLES[:1]
) -> list[tuple[str, str]]:
    """System prompt, worked examples as earlier turns, then the question."""
    ask = instruction(separator)
    messages = [("system", SMOLLM_SYSTEM)]
    for ex in examples:
        messages += [("user", f"{ask}\n\n{ex.question}"), ("assistant", ex.solution(separator))]
    messages.append(("user", f"{ask}\n\n{question}"))
    return messages


def chat_template(separator: str = "\n", examples: Sequence[Example] = EXAMPLES[:1]) -> str:
    """A ChatML prompt template ending at the assistant's turn (SmolLM2)."""
    marker = "\x00QUESTION\x00"
    text = render_chatml(chat_messages(marker, separator, examples), add_generation_prompt=True)
    return escape(text).replace(marker, QUESTION)


def fewshot_template(separator: str = "\n\n", examples: Sequence[Example] = EXAMPLES) -> str:
    """A base-model prompt template: instruction, worked problems, then the open problem."""
    parts = [escape(instruction(separator)) + FEWSHOT_GAP]
    for ex in examples:
        solution = escape(ex.solution(separator))
        parts.append(f"Problem: {escape(ex.question)}\nSolution:\n{solution}{FEWSHOT_GAP}")
    parts.append(f"Problem: {QUESTION}\nSolution:\n")
    return "".join(parts)


def prompt_template(model: LocalModel) -> str:
    """The ``PolicySpec.prompt_template`` for a registry model, by its prompt style."""
    if model.prompt_style == "chat":
        return chat_template(model.step_separator)
    return fewshot_template(model.step_separator)
