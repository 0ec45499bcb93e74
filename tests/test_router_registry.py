"""Versions on a real SQLite file: skops artifacts with checksums, n+1 on retrain, `use`,
and a long-lived Router that follows the current version without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
import skops.io as sio
from sweep_helpers import run_cli
from test_router_support import WORLD, log_to_store, synthetic_log

from ratts.endpoints.usage import Usage
from ratts.errors import RouterError
from ratts.router import Router
from ratts.router.model import TrainedRouter
from ratts.router.registry import SHA_KEY, RouterRegistry, load_artifact, save_artifact, use
from ratts.router.train import records_from_store, train_and_register, train_router
from ratts.settings import PolicySpec, Settings
from ratts.store import Store, open_store
from ratts.strategies.probe import ProbeResult, probe_params
from ratts.types import Budget, Candidate

FAST = {"max_iter": 40, "min_samples_leaf": 5}


class NotTrusted:
    """A type the artifact loader has never heard of."""

    def __init__(self) -> None:
        self.payload = "x"


def settings_for(tmp_path: Path) -> Settings:
    return Settings(
        db_url=f"sqlite:///{tmp_path / 'runs.db'}",
        data_dir=tmp_path / "data",
        policies=[
            PolicySpec(name="weak", base_url="http://127.0.0.1:9/v1", model="weak", params=1e9),
            PolicySpec(
                name="strong", base_url="http://127.0.0.1:9/v1", model="strong", params=7e10
            ),
        ],
        prms=[],
    )


@pytest.fixture
def logged(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    assert log_to_store(store, synthetic_log(80)) == 80 * (len(WORLD) + 2)
    yield store
    store.close()


def test_artifact_round_trip_and_tampering_is_refused(tmp_path: Path) -> None:
    router = train_router(synthetic_log(80), model_params=FAST, holdout=0).router
    path = tmp_path / "r.skops"
    sha = save_artifact(router, path)
    loaded = load_artifact(path, sha)
    features = {"probe_agreement": 0.9, "probe_prm_mean": 0.9, "text_dataset": "synthetic"}
    assert loaded.choose(features, Budget()).config == router.choose(features, Budget()).config

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RouterError, match="does not match its recorded sha256") as info:
        load_artifact(path, sha)
    assert "\n" not in str(info.value)
    with pytest.raises(RouterError, match="no recorded sha256"):
        load_artifact(path, None)
    with pytest.raises(RouterError, match="not found"):
        load_artifact(tmp_path / "missing.skops", sha)


def test_untrusted_types_are_refused_even_with_a_matching_checksum(tmp_path: Path) -> None:
    router = train_router(synthetic_log(60), model_params=FAST, holdout=0).router
    router.probe = {"smuggled": NotTrusted()}
    path = tmp_path / "evil.skops"
    sha = save_artifact(router, path)
    with pytest.raises(RouterError, match=r"untrusted types .*NotTrusted"):
        load_artifact(path, sha)
    junk = tmp_path / "junk.skops"
    junk.write_bytes(b"not a zip")
    with pytest.raises(RouterError, match="not a valid skops file"):
        load_artifact(junk, __import__("hashlib").sha256(b"not a zip").hexdigest())
    assert isinstance(sio.load(path, trusted=[*sio.get_untrusted_types(file=path)]), TrainedRouter)


def test_retrain_creates_n_plus_1_and_a_live_router_follows_current(
    tmp_path: Path, logged: Store
) -> None:
    cfg = settings_for(tmp_path)
    router = Router(cfg, logged)
    features = {"probe_agreement": 0.9, "probe_prm_mean": 0.9, "text_dataset": "synthetic"}
    cold = router.choose(features, Budget(n=16))
    assert cold.router_version is None and "cold start" in cold.reason

    v1, metrics = train_and_register(logged, cfg, model_params=FAST)
    assert v1 == "v1" and metrics["rows"] == 80 * len(WORLD) and "holdout_brier" in metrics
    first = router.choose(features, Budget())
    assert first.router_version == "v1" and first.predicted_accuracy is not None
    # after a probe of 4 weak samples, weak Best-of-16 is priced for its 12 new samples
    probed = ProbeResult(
        strategy="probe",
        params=probe_params(None, 4),
        answer=None,
        candidates=[Candidate([])] * 4,
        selected_index=None,
        usage=Usage(),
        policy="weak",
        prm="prm",
    )
    bon16 = WORLD[1][0]
    full = {r.config.key(): r.predicted_cost for r in first.ranking}[bon16.key()]
    after = router.choose(features, Budget(), probe_result=probed)
    reduced = {r.config.key(): r.predicted_cost for r in after.ranking}[bon16.key()]
    assert reduced.flops == pytest.approx(full.flops * 12 / 16) and reduced.n == 16

    # new runs arrive; retraining makes v2 current and the same Router object uses it
    log_to_store(logged, synthetic_log(30, seed=9))
    v2, _ = train_and_register(logged, cfg, model_params=FAST)
    assert v2 == "v2"
    assert router.choose(features, Budget()).router_version == "v2"
    rows = logged.router_models()
    assert [r["version"] for r in rows] == ["v1", "v2"]
    assert [r["is_current"] for r in rows] == [False, True]
    assert all(len(r["metrics"][SHA_KEY]) == 64 for r in rows)

    assert use(logged, "1") == "v1"
    assert router.choose(features, Budget()).router_version == "v1"
    with pytest.raises(RouterError, match="unknown router version 'v7'"):
        use(logged, "v7")

    # tamper with the current artifact: the live router refuses it in one line
    Path(rows[0]["artifact_path"]).write_bytes(b"tampered")
    with pytest.raises(RouterError, match="sha256"):
        RouterRegistry(logged).current()
    with pytest.raises(RouterError, match="sha256"):
        use(logged, "v1")


def test_cli_train_show_use_eval(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    store = open_store(db)
    log_to_store(store, synthetic_log(40, seed=3))
    toml = tmp_path / "ratts.toml"
    toml.write_text(f'db_url = "{db}"\ndata_dir = "{tmp_path / "data"}"\n')
    code, out, err = run_cli(capsys, "router", "show", "--settings", str(toml))
    assert code == 0 and "no trained router yet" in out
    train_and_register(store, settings_for(tmp_path), model_params=FAST)  # v1
    code, out, err = run_cli(capsys, "router", "train", "--settings", str(toml))
    assert code == 0, err
    assert "trained router v2" in out and "now current" in out
    code, out, err = run_cli(capsys, "router", "use", "v1", "--settings", str(toml))
    assert code == 0 and "router v1 is now current" in out
    code, out, err = run_cli(capsys, "router", "show", "--settings", str(toml))
    assert code == 0 and "v1" in out and "v2" in out
    assert "v2 rules: " in out and '"flops"' in out  # which rule serves at which lam
    assert [r["is_current"] for r in store.router_models()] == [True, False]
    code, out, err = run_cli(capsys, "router", "use", "v9", "--settings", str(toml))
    assert code == 2 and "unknown router version" in err
    png = tmp_path / "eval.png"
    code, out, err = run_cli(
        capsys,
        "router",
        "eval",
        "--settings",
        str(toml),
        "--png",
        str(png),
        "--json",
        str(tmp_path / "eval.json"),
    )
    assert code == 0, err
    assert "| mean compute (flops) | router | best fixed |" in out
    assert png.stat().st_size > 10_000 and (tmp_path / "eval.json").is_file()
    code, out, err = run_cli(capsys, "router", "eval", "--settings", str(toml), "--unit", "x")
    assert code == 2 and "unknown compute unit" in err
    store.close()


def test_training_a_store_with_one_outcome_is_a_clear_cli_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'one.db'}"
    store = open_store(db)
    records = synthetic_log(30)
    for r in records:
        r["correct"] = False
    log_to_store(store, records)
    assert len(records_from_store(store)) == len(records)
    store.close()
    toml = tmp_path / "ratts.toml"
    toml.write_text(f'db_url = "{db}"\ndata_dir = "{tmp_path / "data"}"\n')
    code, _out, err = run_cli(capsys, "router", "train", "--settings", str(toml))
    assert code == 2 and "graded runs are incorrect" in err and "Traceback" not in err
