"""TransformersPRM: a PRM folder scored in process with torch (extra ``local``).

The folder's format is read from its ``config.json`` (see ``prm_formats.detect_format``):
a Qwen2.5-Math-PRM style token-classification model, or a Math-Shepherd style causal LM.
Candidates are tokenized once, sorted by length and packed into right-padded batches of at
most ``spec.max_batch_tokens`` tokens (padding included); each batch is ONE forward pass
under ``torch.inference_mode``, and the head runs only on the hidden states at step tags
(for a causal LM, only the two vocabulary rows it needs), not on every position.

A candidate longer than the PRM's context (``spec.max_context``, else the model's
``max_position_embeddings``) loses tokens from the left of its question, never a step; the
result's ``usage.prm_truncated`` counts such candidates. Scoring runs in a worker thread so
the event loop stays free, one batch set at a time (torch already uses every core).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ratts.endpoints.prm import PRMResult
from ratts.endpoints.prm_formats import (
    PRMFolderError,
    PRMFormat,
    detect_format,
    left_cuts,
    shepherd_token_ids,
    step_tag_id,
)
from ratts.endpoints.usage import Usage
from ratts.errors import ConfigError, InputError
from ratts.settings import PRMSpec

try:
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "kind 'transformers' needs torch and transformers: pip install 'ratts[local]'"
    ) from exc


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):  # type: ignore[no-untyped-call]
    """The Qwen2.5-Math-PRM architecture: a Qwen2 body and a two-layer token head.

    Written from the model's published shape (``model.*`` body, ``score.0`` / ``score.2``
    linear layers with a ReLU between, ``num_labels`` = 2), so its folders load without
    ``trust_remote_code``; vLLM loads the same weights under the same name.
    """

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.model = Qwen2Model(config)
        hidden = config.hidden_size
        self.score = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, config.num_labels)
        )
        self.post_init()  # type: ignore[no-untyped-call]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-token logits, shape (batch, length, num_labels)."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)
        out: torch.Tensor = self.score(hidden.last_hidden_state)
        return out


@dataclass(slots=True)
class _Encoded:
    ids: list[int]
    truncated: bool


class TransformersPRM:
    """A PRM folder (``spec.model``) scored in this process."""

    def __init__(self, spec: PRMSpec, *, device: str = "cpu") -> None:
        if not spec.model:
            raise ConfigError(f"PRM {spec.name!r} needs model (the PRM folder)")
        self.spec = spec
        self.name = spec.name
        folder = Path(spec.model).expanduser()
        self.format: PRMFormat = detect_format(folder, spec.format)
        self.device = torch.device(device)
        try:
            model = self._load(folder)
        except PRMFolderError as exc:
            raise PRMFolderError(f"PRM {spec.name!r} at {folder}: {exc}") from None
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PRMFolderError(
                f"PRM {spec.name!r}: cannot load {folder} as a {self.format.name} PRM: {first}"
            ) from None
        model.eval().to(self.device)
        self.params = spec.params or float(sum(p.numel() for p in model.parameters()))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.context = spec.max_context or int(config.get("max_position_embeddings", 4096))
        pad = self.tokenizer.pad_token_id
        self._pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id or 0)
        self._lock = threading.Lock()  # one scoring at a time: torch already uses every core

    def _load(self, folder: Path) -> nn.Module:
        """Tokenizer, body and head of the folder's format (ids checked before weights)."""
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(str(folder))
        self.step_tag_id = step_tag_id(self.tokenizer, self.format)
        self._body: nn.Module
        self._head: torch.Tensor | nn.Module
        if self.format.head == "token_classification":
            model = Qwen2ForProcessRewardModel.from_pretrained(str(folder), dtype=torch.float32)
            self._body, self._head = model.model, model.score
            self._positive = 1  # Qwen's head: [negative, positive]
            return model
        good, bad = shepherd_token_ids(self.tokenizer, self.format)
        lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        self._body = lm.base_model
        rows = lm.get_output_embeddings().weight  # type: ignore[no-untyped-call]
        self._head = rows[[good, bad]].detach().clone()
        self._positive = 0  # rows in the order [good, bad]
        return lm

    # ------------------------------------------------------------ public API

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> PRMResult:
        """Rewards for every step of every candidate; a candidate with no steps gets []."""
        if not question.strip():
            raise InputError("cannot score steps for an empty question")
        return await asyncio.to_thread(self.score_sync, question, candidates)

    def score_sync(self, question: str, candidates: Sequence[Sequence[str]]) -> PRMResult:
        """The blocking work of ``score`` (also used by benchmarks)."""
        with self._lock:
            return self._score(question, candidates)

    def _score(self, question: str, candidates: Sequence[Sequence[str]]) -> PRMResult:
        started = time.perf_counter()
        todo = [i for i, steps in enumerate(candidates) if len(steps) > 0]
        encoded = {i: self._encode(question, candidates[i]) for i in todo}
        scores: list[list[float]] = [[] for _ in candidates]
        for batch in self._batches(encoded):
            for i, row in zip(batch, self._forward([encoded[i].ids for i in batch]), strict=True):
                if len(row) != len(candidates[i]):
                    raise InputError(
                        f"PRM {self.name!r}: candidate {i} has {len(candidates[i])} steps but "
                        f"its text holds {len(row)} step tags"
                    )
                scores[i] = row
        tokens = sum(len(e.ids) for e in encoded.values())
        usage = Usage(
            prm_tokens=tokens,
            prm_requests=1 if todo else 0,
            prm_truncated=sum(e.truncated for e in encoded.values()),
            flops=2.0 * self.params * tokens,
            dollars=tokens * self.spec.usd_per_mtok / 1e6,
            request_seconds=time.perf_counter() - started,
        )
        return PRMResult(scores=scores, usage=usage)

    async def aclose(self) -> None:
        """Nothing to release: the weights go with the object."""

    async def __aenter__(self) -> TransformersPRM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ internals

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def _encode(self, question: str, steps: Sequence[str]) -> _Encoded:
        """Token ids of one candidate, its question cut from the left to fit the context."""
        ids = self._ids(self.format.render(question, steps))
        if len(ids) <= self.context:
            return _Encoded(ids, truncated=False)
        q_ids = self._ids_plain(question.strip())
        cuts = left_cuts(len(q_ids), len(ids), self.context)
        try:
            cut = next(cuts)
            while True:
                shorter = str(self.tokenizer.decode(q_ids[cut:]))
                ids = self._ids(self.format.render(shorter, steps))
                if len(ids) <= self.context and shorter.strip():
                    return _Encoded(ids, truncated=True)
                cut = cuts.send(len(ids) if shorter.strip() else self.context + 1)
        except StopIteration:
            raise InputError(
                f"PRM {self.name!r}: the steps alone do not fit its context of {self.context} "
                "tokens, even with the question cut away"
            ) from None

    def _ids_plain(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _batches(self, encoded: dict[int, _Encoded]) -> list[list[int]]:
        """Candidate indexes, longest first, packed so that rows x longest <= the budget."""
        order = sorted(encoded, key=lambda i: len(encoded[i].ids), reverse=True)
        budget = self.spec.max_batch_tokens
        batches: list[list[int]] = []
        for i in order:
            if batches and len(encoded[batches[-1][0]].ids) * (len(batches[-1]) + 1) <= budget:
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def _forward(self, rows: list[list[int]]) -> list[list[float]]:
        """One padded forward pass; positive-class probability at every step tag."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, row in enumerate(rows):
            ids[k, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[k, : len(row)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            hidden = self._body(input_ids=ids, attention_mask=mask).last_hidden_state
            at_tags = (ids == self.step_tag_id) & mask.bool()
            picked = hidden[at_tags].float()
            if isinstance(self._head, torch.Tensor):
                logits = picked @ self._head.T
            else:
                logits = self._head(picked)
            positive = torch.softmax(logits.float(), dim=-1)[:, self._positive]
        counts = at_tags.sum(dim=1).tolist()
        return [part.tolist() for part in torch.split(positive.cpu(), counts)]
