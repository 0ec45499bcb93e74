"""The PRM contract against real vLLM-CPU: ``/pooling`` scores equal TransformersPRM's.

Each tiny PRM (random weights, built locally) is served by ``ratts models serve-prm`` (vLLM's
pooling runner with the STEP pooler for its format), and the same inputs are scored in
process. The test holds the machine-wide vLLM lock itself while a server runs (run it
WITHOUT an outer ``flock``: ``pytest -m real tests/test_prm_vllm.py``), unless
``RATTS_VLLM_LOCK_HELD=1`` says the caller already holds it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ratts.endpoints.prm_pooling import VllmPoolingPRM
from ratts.endpoints.prm_transformers import TransformersPRM
from ratts.errors import BadResponseError
from ratts.local.serve import _group_alive, free_port, process_alive, read_record
from ratts.local.tiny_prm import TinyFormat, build_tiny_prm
from ratts.settings import PRMSpec, load_settings

pytestmark = pytest.mark.real

LOCK = Path("/tmp/ratts-vllm.lock")
QUESTION = "Tom has 3 boxes of 12 pencils and gives away 7. How many pencils are left?"
TARGET = ["3 * 12 = 36 pencils in total.", "36 - 7 = 29.", "The answer is \\boxed{29}."]


def batch_of_64() -> list[list[str]]:
    return [
        [f"Step {k + 1}: we add {i} and {k} to get {i + k}." for k in range(1 + i % 5)]
        for i in range(64)
    ]


def _cli(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ratts.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
    )


@dataclass(frozen=True)
class Served:
    fmt: TinyFormat
    folder: Path
    spec: PRMSpec  # as written to the settings file by serve-prm


@pytest.fixture(scope="module")
def vllm_lock() -> Iterator[None]:
    if os.environ.get("RATTS_VLLM_LOCK_HELD") == "1":
        yield
        return
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # vLLM-CPU takes both cores: one server at a time
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module", params=["qwen2.5-math-prm", "math-shepherd"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, vllm_lock: None
) -> Iterator[Served]:
    fmt: TinyFormat = request.param
    base = tmp_path_factory.mktemp(f"prm-vllm-{fmt}")
    folder = build_tiny_prm(base / f"tiny-{fmt}", fmt)
    config = base / "ratts.toml"
    env = {"RATTS_DATA_DIR": str(base), "RATTS_CONFIG": str(config)}
    port = str(free_port())
    started = _cli(
        "models", "serve-prm", str(folder), "--port", port, "--dtype", "float32",
        env=env, timeout=900,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-3000:]
    record = read_record(folder.name, base)
    assert record is not None and process_alive(record.pid)
    spec = load_settings(config).prm()  # serve-prm made it the default PRM
    assert spec.name == folder.name and spec.kind == "vllm_pooling" and spec.format == fmt
    assert spec.base_url is not None and spec.base_url.endswith(f":{port}/v1")
    assert spec.max_context == 512 and spec.params > 0
    assert [p.name for p in load_settings(config).prms][1:] == ["arith"]  # defaults kept
    try:
        yield Served(fmt, folder, spec)
    finally:
        stopped = _cli("models", "stop", folder.name, env=env, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert not process_alive(record.pid) and not _group_alive(record.pid)
        assert read_record(folder.name, base) is None


@pytest.fixture(scope="module")
def local(served: Served) -> TransformersPRM:
    return TransformersPRM(
        PRMSpec(name="local", kind="transformers", model=str(served.folder), params=1.0)
    )


async def test_pooling_matches_transformers_alone_and_in_a_batch_of_64(
    served: Served, local: TransformersPRM
) -> None:
    batch = batch_of_64()
    batch[17] = TARGET
    spec = served.spec.model_copy(update={"batch_size": 64})
    async with VllmPoolingPRM(spec) as remote:
        alone = await remote.score(QUESTION, [TARGET])
        many = await remote.score(QUESTION, batch)
    assert many.usage.prm_requests == 1  # all 64 in one /pooling request
    here_alone = await local.score(QUESTION, [TARGET])
    here_many = await local.score(QUESTION, batch)
    assert len(alone.scores[0]) == len(TARGET)
    assert alone.scores[0] == pytest.approx(here_alone.scores[0], abs=1e-4)
    assert many.scores[17] == pytest.approx(alone.scores[0], abs=1e-4)
    assert [len(s) for s in many.scores] == [len(c) for c in batch]
    for theirs, ours in zip(many.scores, here_many.scores, strict=True):
        assert theirs == pytest.approx(ours, abs=1e-4)
        assert all(0.0 <= s <= 1.0 for s in theirs)
    # both tokenized the very same text: vLLM's reported prompt tokens equal ours
    assert alone.usage.prm_tokens == here_alone.usage.prm_tokens
    assert many.usage.prm_tokens == here_many.usage.prm_tokens


async def test_a_server_of_another_format_gives_the_wrong_rows(served: Served) -> None:
    """A real server that answers with the wrong number of rows is a clear BadResponseError."""
    other = "math-shepherd" if served.fmt == "qwen2.5-math-prm" else "qwen2.5-math-prm"
    spec = served.spec.model_copy(update={"format": other, "max_retries": 0})
    async with VllmPoolingPRM(spec) as remote:
        with pytest.raises(BadResponseError, match="candidate 0 has 3 steps but 0 rewards"):
            await remote.score(QUESTION, [TARGET])


async def test_a_long_question_is_cut_the_same_way_by_both(
    served: Served, local: TransformersPRM
) -> None:
    long_question = "Long preamble word " * 200 + "How many pencils are left?"
    assert served.spec.max_context == local.context == 512
    async with VllmPoolingPRM(served.spec) as remote:
        theirs = await remote.score(long_question, [TARGET, TARGET[:1]])
    ours = await local.score(long_question, [TARGET, TARGET[:1]])
    assert theirs.usage.prm_truncated == ours.usage.prm_truncated == 2
    assert theirs.usage.prm_tokens == ours.usage.prm_tokens <= 2 * 512
    assert [len(s) for s in theirs.scores] == [3, 1]  # every step kept
    for a, b in zip(theirs.scores, ours.scores, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
