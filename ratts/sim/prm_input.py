"""Reading a PRM request's inputs back into (question, steps): Qwen2.5-Math-PRM style
strings (steps end with ``<extra_0>``) or a chat with user and assistant turns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ratts.sim import world


class Message(Protocol):
    role: str
    content: str


class BadInput(ValueError):
    """The inputs cannot be read (a 400 for the client)."""


def from_messages(messages: Sequence[Message]) -> tuple[str, list[str], int]:
    """A chat for the PRM: the user turn is the question, the assistant turn the solution."""
    users = [m.content for m in messages if m.role == "user"]
    answers = [m.content for m in messages if m.role == "assistant"]
    if not users or not answers:
        raise BadInput("messages need a user and an assistant turn")
    question = world.extract_question(users[-1])
    steps = _marked_steps(answers[-1])
    tokens = sum(world.count_tokens(m.content) for m in messages)
    return question, steps, tokens


def _marked_steps(solution: str) -> list[str]:
    """Steps are the chunks before each ``<extra_0>`` marker."""
    return [s.strip() for s in solution.split(STEP_TOKEN)[:-1]]


STEP_TOKEN = "<extra_0>"


def split_pooling_input(text: str) -> tuple[str, list[str]]:
    """(question, steps) of one Qwen2.5-Math-PRM style input string."""
    chunks = text.split(STEP_TOKEN)
    if len(chunks) < 2:
        return world.extract_question(text), []
    head = chunks[0]
    assistant = head.rfind("<|im_start|>assistant\n")
    if assistant >= 0:
        prefix, first = head[:assistant], head[assistant + len("<|im_start|>assistant\n") :]
    else:
        q_start = max(head.rfind("Problem: "), 0)
        mark = world.STEP_MARK.search(head, q_start)
        answer = head.find("The final answer is", q_start)
        cuts = [c for c in (mark.start() if mark else -1, answer) if c >= 0]
        if cuts:
            prefix, first = head[: min(cuts)], head[min(cuts) :]
        elif "\n\n" in head.rstrip():
            cut = head.rstrip().rfind("\n\n")
            prefix, first = head[:cut], head[cut:]
        else:
            prefix, first = head, ""
    steps = [first.strip(), *(c.strip() for c in chunks[1:-1])]
    return world.extract_question(prefix), steps
