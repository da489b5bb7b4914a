"""The run infrastructure of the studies: the stage cache, claimed output folders, progress
output and the command line (the studies themselves: tests/test_experiments.py)."""

import json
import re
import warnings
from importlib.util import find_spec
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest
import tqdm.auto
import tqdm.std
from test_laplace_problems import key as make_key
from test_laplace_problems import problem

from bnn_jax import _tqdm, curvature, laplace, losses
from bnn_jax.data import Batches
from experiments import claim, cli, common, progress, study
from experiments.cache import Cache, CacheWarning, fingerprint, settings_hash


class Counter:
    """``compute`` functions that count their calls."""

    def __init__(self):
        self.calls = 0

    def tree(self):
        self.calls += 1
        return {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "stats": {"nll": 0.5}}

    def history(self):
        self.calls += 1
        return {"loss": np.array([1.0, np.nan], np.float32)}


def test_a_stage_is_computed_once_and_read_back_exactly(tmp_path):
    cache, count = Cache(tmp_path), Counter()
    first = cache.stage("fit", {"seed": 0}, count.tree)
    again = cache.stage("fit", {"seed": 0}, count.tree)
    assert count.calls == 1
    for value in (first, again):  # fresh and cached values alike: NumPy, same dtype
        assert value["w"].dtype == np.float32 and value["stats"]["nll"] == 0.5
        np.testing.assert_array_equal(value["w"], np.arange(6).reshape(2, 3))
    cache.stage("fit", {"seed": 1}, count.tree)  # other settings: another entry
    assert count.calls == 2 and len(list(tmp_path.glob("fit-*.msgpack"))) == 2
    record_file = f"fit-{settings_hash({'seed': 0})}.msgpack.record.json"
    record = json.loads((tmp_path / record_file).read_text())
    assert record["settings"] == {"seed": 0} and len(record["sha256"]) == 64


def test_a_json_stage_reads_nan_back_as_null(tmp_path):
    cache, count = Cache(tmp_path), Counter()
    first = cache.json("history", {"seed": 0}, count.history)
    assert first == cache.json("history", {"seed": 0}, count.history) == {"loss": [1.0, None]}
    assert count.calls == 1
    value_file = tmp_path / f"history-{settings_hash({'seed': 0})}.json"
    json.loads(value_file.read_text(), parse_constant=pytest.fail)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_one_byte(path):  # same size, one payload byte changed
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01
    path.write_bytes(bytes(data))


def _other_settings(record_path):
    record = json.loads(record_path.read_text())
    record["settings"]["seed"] = 7
    record_path.write_text(json.dumps(record))


HASH = settings_hash({"seed": 0})
FILES = {
    "tree": f"run-fit-{HASH}.msgpack",
    "tree record": f"run-fit-{HASH}.msgpack.record.json",
    "json": f"run-history-{HASH}.json",
    "json record": f"run-history-{HASH}.json.record.json",
}


@pytest.mark.parametrize(
    "damage, file, reason",
    [
        (_truncate, "tree", "checksum does not match"),
        (_flip_one_byte, "tree", "checksum does not match"),
        (_flip_one_byte, "json", "checksum does not match"),
        (_truncate, "json record", "not valid JSON"),
        (_other_settings, "tree record", r"other settings \(differing at \['/seed'\]\)"),
        (lambda p: p.unlink(), "tree", "value file is missing"),
        (lambda p: p.unlink(), "json record", "no record of its settings"),
    ],
    ids=["truncated", "overwritten", "json", "record", "settings", "lost-value", "lost-record"],
)
def test_a_damaged_entry_is_named_removed_and_recomputed(tmp_path, damage, file, reason):
    cache, count = Cache(tmp_path), Counter()
    fresh = cache.stage("run-fit", {"seed": 0}, count.tree)
    cache.json("run-history", {"seed": 0}, count.history)
    damage(tmp_path / FILES[file])
    with pytest.warns(CacheWarning, match=reason) as caught:
        again = cache.stage("run-fit", {"seed": 0}, count.tree)
        cache.json("run-history", {"seed": 0}, count.history)
    value_file = FILES[file.removesuffix(" record")]
    assert len(caught) == 1 and f"cache entry {tmp_path / value_file} " in str(caught[0].message)
    assert count.calls == 3  # the damaged entry only
    np.testing.assert_array_equal(again["w"], fresh["w"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: the next run reads it silently
        cache.stage("run-fit", {"seed": 0}, count.tree)
        cache.json("run-history", {"seed": 0}, count.history)
    assert count.calls == 3


class Pair(NamedTuple):
    a: np.ndarray
    b: np.ndarray


def test_a_stage_holds_other_pytrees_only_with_a_target(tmp_path):
    cache, pair = Cache(tmp_path), Pair(np.zeros(2, np.float32), np.ones(3, np.int32))
    with pytest.raises(ValueError, match=r"returned a Pair at /; .*pass target="):
        cache.stage("pair", {}, lambda: pair)
    template = lambda: Pair(np.zeros(2, np.float32), np.zeros(3, np.int32))
    for _ in range(2):
        value = cache.stage("pair", {}, lambda: pair, target=template)
        assert isinstance(value, Pair)
        np.testing.assert_array_equal(value.b, pair.b)
    # a target that no longer fits the entry (another model): named, removed, recomputed
    other = lambda: Pair(np.zeros(2, np.float32), np.zeros(4, np.int32))
    with pytest.warns(CacheWarning, match="has shape"):
        cache.stage("pair", {}, lambda: Pair(pair.a, np.ones(4, np.int32)), target=other)
    with pytest.raises(ValueError, match="name: expected a file-name part"):
        cache.stage("a/b", {}, lambda: {"x": np.zeros(1)})
    with pytest.raises(ValueError, match="settings: expected finite numbers"):
        cache.stage("x", {"lr": float("nan")}, lambda: {"x": np.zeros(1)})


def test_fingerprint_tells_arrays_apart():
    x = np.arange(6, dtype=np.float32)
    assert fingerprint(x) == fingerprint(x.copy())
    assert len({fingerprint(x), fingerprint(x.reshape(2, 3)), fingerprint(x.astype(float))}) == 3


def test_a_claimed_folder_refuses_other_runs_and_configs(tmp_path):
    out, a, b = tmp_path / "out", {"seed": 0}, {"seed": 1}
    with claim.claim(out, a):
        # a second claim while the first is held (flock is per open file, even in one process)
        with pytest.raises(claim.ClaimError, match=r"in use by a running study \(process \d+"):
            with claim.claim(out, a):
                pass
        with pytest.raises(claim.ClaimError, match="in use"):
            with claim.claim(out, b, overwrite=True):
                pass
    with pytest.raises(RuntimeError, match="interrupted"):
        with claim.claim(out, a):  # the lock is released after an exception too
            raise RuntimeError("interrupted")
    with pytest.raises(claim.ClaimError, match="different config"):
        with claim.claim(out, b):  # the interrupted run's folder still refuses another config
            pass
    with claim.claim(out, a):  # the same config resumes
        claim.check(out, a)
        (out / "metrics.json").write_text("{}")
        (out / "figures").mkdir()
    (out / "cache").mkdir()
    with claim.claim(out, b, overwrite=True):  # replaces a's results, keeps the cache
        assert not (out / "metrics.json").exists() and not (out / "figures").exists()
        assert (out / "cache").is_dir()
        with pytest.raises(claim.ClaimError, match="not by this run's config"):
            claim.check(out, a)


def test_a_folder_of_an_earlier_version_is_judged_by_its_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(claim.ClaimError, match="different config"):
        with claim.claim(tmp_path, {"seed": 1}):
            pass
    with claim.claim(tmp_path, {"seed": 0}):
        pass


def test_progress_shows_stages_bars_and_a_table_unless_quiet(capsys):
    shown = progress.Progress()
    with progress.use(shown):
        assert progress.current() is shown and shown.bars
        with progress.current().stage("fit family"):
            sum(progress.current().bar(range(3), desc="members"))
        shown.table([{"method": "map", "accuracy": 0.91234}, {"method": "kfac", "ECE": None}])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert re.fullmatch(r"fit family: \d+\.\d s \(CPU \d+\.\d s\)", lines[0]), lines[0]
    assert lines[1].split() == ["method", "accuracy", "ECE"]
    assert lines[2].split() == ["map", "0.912", "-"] and lines[3].split() == ["kfac", "-", "-"]
    assert "members" in err  # the bar
    quiet = progress.Progress(quiet=True)
    with progress.use(quiet):
        with progress.current().stage("fit family"):
            sum(progress.current().bar(range(3), desc="members"))
        quiet.table([{"method": "map"}])
        assert not progress.current().bars
    assert capsys.readouterr() == ("", "")
    assert progress.current() is not quiet  # restored after the block


def test_the_command_line_sets_seed_and_config_keys(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"epochs": 2, "seed": 5}))
    argv = ["--quick", "--config", str(path), "--seed", "3", "--out", str(tmp_path / "o")]
    config, out, args = cli.parse_args("study", study.get_config, "digits", argv)
    assert config["seed"] == 3 and config["epochs"] == 2 and out == tmp_path / "o"
    assert config["toy2d"] == study.get_config(quick=True)["toy2d"] and not args.quiet
    assert "seed" not in config["toy2d"]  # one seed for the whole run
    with pytest.raises(ValueError, match=r"config\['toy2d'\]: has its own 'seed'"):
        study.check(config | {"toy2d": config["toy2d"] | {"seed": 1}})


def test_bars_never_come_from_tqdm_auto_directly():
    """``tqdm.auto`` warns "IProgress not found" on import in a notebook without ipywidgets;
    only ``bnn_jax._tqdm`` may import it, and only where ipywidgets is installed."""
    root = Path(__file__).parent.parent
    sources = [*root.glob("bnn_jax/**/*.py"), *root.glob("experiments/*.py")]
    offenders = [
        str(p.relative_to(root))
        for p in sources
        if p.name != "_tqdm.py" and re.search(r"tqdm\.(auto|autonotebook|notebook)", p.read_text())
    ]
    assert not offenders
    if find_spec("ipywidgets") is None:
        assert _tqdm.tqdm is tqdm.std.tqdm
    else:
        assert _tqdm.tqdm is tqdm.auto.tqdm


def test_a_cached_search_equals_the_library_search(x64, tmp_path, monkeypatch):
    """The grid searched one scale at a time and cached gives ``laplace.search``'s candidates,
    values (NaN never picked) and tuned posterior; the rerun searches nothing."""
    apply_fn, params, x, y = problem("mlp")
    lik = losses.categorical()
    post = laplace.fit(
        curvature.diagonal(apply_fn, lik, fisher=curvature.exact_fisher()), params,
        Batches(x, y, 12), key=make_key(0), prior_prec=1.0,
        progress=False,
    )  # fmt: skip

    def objective(p):  # NaN below tau = 0.5; otherwise the least at scale 0.5, tau 3
        value = (jnp.log(p.scale) - jnp.log(0.5)) ** 2 + (jnp.log(p.prior_prec) - 1.0) ** 2
        return jnp.where(p.prior_prec < 0.5, jnp.nan, value)

    grid = dict(prior_prec=np.array([0.3, 1.0, 3.0, 10.0]), scale=np.array([0.05, 0.5, 5.0]))
    reference = laplace.search(post, objective, **grid, chunk_size=3)
    search = lambda: common.search_cached(
        tmp_path, "diag", {"seed": 0}, post, objective, **grid, chunk_size=3
    )
    first = search()
    monkeypatch.setattr(laplace, "search", None)  # the rerun must not search
    for result in (first, search()):
        assert int(result.best) == int(reference.best) == 6  # scale 0.5, tau 3
        for field in ("scale", "prior_prec", "value"):
            np.testing.assert_allclose(getattr(result, field), getattr(reference, field))
        assert result.posterior.scale == reference.posterior.scale
        assert result.posterior.prior_prec == reference.posterior.prior_prec
