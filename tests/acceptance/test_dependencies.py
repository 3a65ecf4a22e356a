"""A strategy's requirements.txt, the user's way: ``sequence strategy deploy FOLDER --start``
from a relative path with default flags, against one ``sequence up``.

pip resolves numpy and pandas on this (the deploying) machine for the runners'
interpreter; the wheels are uploaded once and unpacked once per runner; the
strategy imports them in a sandbox that has no network. Counting is done on the
coordinator's own request counters (/metrics): wheel uploads, and wheel fetches
by the runner.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import EXAMPLES, Platform, events, only, stage

pytestmark = pytest.mark.slow

PUT_WHEEL = 'route="/v1/layers/{layer_id}/wheels/{sha256}"'
RUNNER_FETCH = 'route="/v1/runners/{runner_id}/runs/{run_id}/wheels/{sha256}"'

NETWORK_PROBE = '''\
import json, socket, sys
import numpy as np
out = {"event": "probe", "mean": float(np.mean(np.arange(10))), "paths": sys.path}
for host, port in (("pypi.org", 443), ("151.101.0.223", 443), ("1.1.1.1", 53)):
    try:
        socket.create_connection((host, port), timeout=2).close()
        out[host] = "connected"
    except OSError as exc:
        out[host] = type(exc).__name__
print(json.dumps(out), flush=True)
'''


@pytest.fixture(scope="module")
def layer_cache() -> Iterator[Path]:
    # The sandbox's unprivileged uid binds the layer from here: a root runner needs a
    # world-traversable path (pytest's tmp dirs are 0700).
    base = Path("/var/lib/sequence") if os.geteuid() == 0 else Path("/tmp")
    path = base / f"test-layers-{uuid.uuid4().hex[:12]}"
    yield path
    subprocess.run(["chmod", "-R", "u+w", str(path)], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, layer_cache: Path) -> Iterator[Platform]:
    p = Platform(tmp_path_factory.mktemp("deps-platform"))
    p.env["SEQUENCE_RUNNER_LAYER_CACHE"] = str(layer_cache)  # a fresh cache: builds are counted
    p.start()
    try:
        yield p
    finally:
        p.close()


def counter(platform: Platform, route: str) -> float:
    text = httpx.get(f"{platform.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sequence_http_requests_total{") and route in line)


def deploy_relative(platform: Platform, folder: Path, *extra: str, check: bool = True,
                    ) -> subprocess.CompletedProcess[str]:
    """`sequence strategy deploy NAME --start` from the folder's parent, as a user types it
    (the example samples the stream for one second instead of six: the suite's time)."""
    return platform.cli("strategy", "deploy", folder.name, "--start", "--env", "SIGNAL_SECONDS=1", *extra,
                        cwd=folder.parent, timeout=300, check=check)


def test_numpy_and_pandas_run_in_the_sandbox_from_requirements_txt(platform: Platform, tmp_path: Path) -> None:
    folder = stage(EXAMPLES / "pandas_signal", tmp_path / "pandas_signal")
    out = deploy_relative(platform, folder)
    assert "dependencies" in out.stdout and "numpy==" in out.stdout and "pandas==" in out.stdout, out.stdout
    raw, recs = platform.follow("pandas-signal", timeout=180)
    boot = only(recs, "boot")
    assert boot["numpy"] and boot["pandas"], raw
    signal = only(recs, "signal")
    assert signal["side"] in ("buy", "sell", "flat") and signal["mean"] > 0, raw
    assert only(recs, "sample")["rows"] >= 1, raw
    only(recs, "done")
    s = platform.inspect("pandas-signal")
    assert s["last_exit"]["code"] == 0, s
    names = {p["name"]: p["version"] for p in s["dependencies"]["packages"]}
    assert {"numpy", "pandas"} <= set(names), s["dependencies"]
    assert names["numpy"] == boot["numpy"] and names["pandas"] == boot["pandas"], (names, boot)
    assert s["dependencies"]["size_bytes"] > 1_000_000, s["dependencies"]
    # `inspect` shows the lock as package == version, and the layer's size.
    text = platform.cli("strategy", "inspect", "pandas-signal").stdout
    assert f"numpy=={names['numpy']}" in text and "bytes" in text, text


def test_the_sandbox_has_no_network_and_no_runtime_site_packages(platform: Platform, tmp_path: Path) -> None:
    folder = tmp_path / "probe"
    folder.mkdir()
    (folder / "main.py").write_text(NETWORK_PROBE)
    (folder / "Sequence.toml").write_text('[strategy]\nname = "deps-probe"\n\n[hosted]\negress = "none"\n')
    shutil.copy(EXAMPLES / "pandas_signal" / "requirements.txt", folder / "requirements.txt")
    deploy_relative(platform, folder)
    raw, recs = platform.follow("deps-probe", timeout=180)
    probe = only(recs, "probe")
    assert probe["mean"] == 4.5, raw
    for host in ("pypi.org", "151.101.0.223", "1.1.1.1"):
        assert probe[host] != "connected", raw
    assert "/opt/sequence/deps" in probe["paths"], raw


def test_a_redeploy_with_an_unchanged_lock_uploads_and_fetches_nothing(platform: Platform, tmp_path: Path) -> None:
    folder = stage(EXAMPLES / "pandas_signal", tmp_path / "pandas_signal")
    deploy_relative(platform, folder)  # the coordinator and the runner have the layer now
    platform.follow("pandas-signal", timeout=180)
    puts, fetches = counter(platform, PUT_WHEEL), counter(platform, RUNNER_FETCH)

    again = platform.cli_json("strategy", "deploy", folder.name, "--start", "--env", "SIGNAL_SECONDS=1",
                              cwd=folder.parent, timeout=300)
    assert again["layer_upload"]["uploaded_bytes"] == 0 and again["layer_upload"]["uploaded_wheels"] == 0, again
    assert again["layer_upload"]["lock_reused"] is True, again  # pip did not even run
    # Resolving again with pip finds the same wheels: still nothing to upload.
    fresh = platform.cli_json("strategy", "deploy", folder.name, "--start", "--refresh-deps", "--env", "SIGNAL_SECONDS=1",
                              cwd=folder.parent,
                              timeout=300)
    assert fresh["layer_upload"]["uploaded_bytes"] == 0 and fresh["layer_upload"]["lock_reused"] is False, fresh
    assert fresh["layer_upload"]["layer_id"] == again["layer_upload"]["layer_id"]
    _raw, recs = platform.follow("pandas-signal", timeout=180)
    only(recs, "done")
    assert counter(platform, PUT_WHEEL) == puts, "a redeploy with the same lock uploaded wheels"
    assert counter(platform, RUNNER_FETCH) == fetches, "a runner that has the layer fetched wheels again"


def _sdist(dest: Path, name: str, version: str) -> Path:
    """A source distribution only (no wheel): what the sandbox can never take."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{name}-{version}.tar.gz"
    files = {
        f"{name}-{version}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}/setup.py": f"from setuptools import setup\nsetup(name={name!r}, version={version!r})\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for arc, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(arc)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_requirement_with_only_an_sdist_is_refused_at_deploy_naming_it(platform: Platform, tmp_path: Path) -> None:
    index = tmp_path / "index"
    _sdist(index, "onlysdist", "1.0")
    folder = tmp_path / "sdist-only"
    folder.mkdir()
    (folder / "main.py").write_text("import onlysdist\n")
    (folder / "Sequence.toml").write_text('[strategy]\nname = "sdist-only"\n')
    (folder / "requirements.txt").write_text(f"--no-index\n--find-links {index}\nonlysdist==1.0\n")
    posts, puts = counter(platform, 'route="/v1/layers",'), counter(platform, PUT_WHEEL)
    res = deploy_relative(platform, folder, check=False)
    assert res.returncode != 0, res.stdout
    err = res.stderr.replace("\n", " ")
    assert "onlysdist" in err and "no wheel" in err and "sdist" in err, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    # Refused before anything is uploaded: no lock posted, no wheel, no strategy.
    assert counter(platform, 'route="/v1/layers",') == posts and counter(platform, PUT_WHEEL) == puts
    names = [s["name"] for s in platform.cli_json("strategy", "list")["strategies"]]
    assert "sdist-only" not in names, names


def test_a_local_package_is_refused_before_pip_runs_its_setup_py(platform: Platform, tmp_path: Path) -> None:
    """A folder in requirements.txt had its setup.py run on the deploying machine by pip, and
    then resolved to nothing: the deploy succeeded and the strategy failed at import."""
    pkg = tmp_path / "evilpkg"
    pkg.mkdir()
    marker = tmp_path / "setup-py-ran"
    (pkg / "setup.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                  "from setuptools import setup\nsetup(name='evilpkg', version='1.0')\n")
    folder = tmp_path / "local-dep"
    folder.mkdir()
    (folder / "main.py").write_text("import evilmod\n")
    (folder / "Sequence.toml").write_text('[strategy]\nname = "local-dep"\n')
    (folder / "requirements.txt").write_text(f"six\n{pkg}\n")
    res = deploy_relative(platform, folder, check=False)
    assert res.returncode == 1, res.stdout
    assert f"requirements.txt line 2: {pkg} is a local path" in res.stderr.replace("\n", " "), res.stderr
    assert not marker.exists()
    names = [s["name"] for s in platform.cli_json("strategy", "list")["strategies"]]
    assert "local-dep" not in names, names


def _layer_dir(layer_cache: Path, platform: Platform, name: str) -> Path:
    lid = platform.inspect(name)["dependencies"]["layer_id"]
    path = layer_cache / lid
    assert path.is_dir(), f"no cached layer {path}: {sorted(os.listdir(layer_cache))}"
    return path


def test_a_layer_tampered_with_on_the_runners_disk_is_detected_and_fetched_again(
        platform: Platform, layer_cache: Path, tmp_path: Path) -> None:
    folder = stage(EXAMPLES / "pandas_signal", tmp_path / "pandas_signal")
    deploy_relative(platform, folder)
    platform.follow("pandas-signal", timeout=180)
    victim = _layer_dir(layer_cache, platform, "pandas-signal") / "numpy" / "__init__.py"
    original = victim.read_bytes()
    os.chmod(victim, 0o644)
    victim.write_bytes(original + b"\nraise SystemExit('tampered layer')\n")
    os.chmod(victim, 0o444)
    fetches = counter(platform, RUNNER_FETCH)

    platform.cli("strategy", "start", "pandas-signal")
    raw, recs = platform.follow("pandas-signal", timeout=180)
    only(recs, "done")
    assert "tampered layer" not in raw, raw
    assert victim.read_bytes() == original, "the tampered file was not restored"
    assert counter(platform, RUNNER_FETCH) > fetches, "the layer was not fetched again"
    assert re.search(r"layer [0-9a-f]{12} on disk does not match its hashes", platform.up_log(400)), \
        platform.up_log()


def test_two_strategies_with_the_same_lock_share_one_cached_layer(
        platform: Platform, layer_cache: Path, tmp_path: Path) -> None:
    first = stage(EXAMPLES / "pandas_signal", tmp_path / "pandas_signal")
    deploy_relative(platform, first)
    platform.follow("pandas-signal", timeout=180)
    fetches = counter(platform, RUNNER_FETCH)
    lid = platform.inspect("pandas-signal")["dependencies"]["layer_id"]
    built = len(re.findall(rf"layer {lid[:12]} built", platform.up_log(100_000)))
    assert built >= 1
    second = stage(EXAMPLES / "pandas_signal", tmp_path / "twin")
    toml = (second / "Sequence.toml").read_text().replace('name = "pandas-signal"', 'name = "pandas-twin"')
    (second / "Sequence.toml").write_text(toml)
    deploy_relative(platform, second)
    _raw, recs = platform.follow("pandas-twin", timeout=180)
    only(recs, "done")
    a, b = platform.inspect("pandas-signal")["dependencies"], platform.inspect("pandas-twin")["dependencies"]
    assert a["layer_id"] == b["layer_id"], (a, b)
    assert counter(platform, RUNNER_FETCH) == fetches, "the second strategy's run fetched the shared layer again"
    layers = [p for p in layer_cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert [p.name for p in layers] == [a["layer_id"]], layers
    assert len(re.findall(rf"layer {lid[:12]} built", platform.up_log(100_000))) == built, \
        "the runner unpacked the shared layer again for the second strategy"
    assert events(recs, "boot")


LAYER_ATTACK = '''\
import json, os
root = "/opt/sequence/deps"
out = {"event": "attack"}
def attempt(name, fn):
    try:
        fn()
        out[name] = "succeeded"
    except OSError as exc:
        out[name] = type(exc).__name__ + ":" + str(exc.errno)
target = os.path.join(root, "numpy", "__init__.py")
attempt("append", lambda: open(target, "a").write("raise SystemExit('poisoned')\\n"))
attempt("create", lambda: open(os.path.join(root, "sitecustomize.py"), "w").write("print('owned')\\n"))
attempt("chmod", lambda: os.chmod(target, 0o666))
attempt("rename", lambda: os.rename(target, target + ".bak"))
attempt("unlink", lambda: os.unlink(target))
attempt("mkdir", lambda: os.mkdir(os.path.join(root, "evil")))
print(json.dumps(out), flush=True)
'''


def test_a_strategy_cannot_poison_a_layer_it_shares_with_others(
        platform: Platform, layer_cache: Path, tmp_path: Path) -> None:
    """Layers are shared by every strategy (of every client) with the same lock: a strategy
    that writes into its layer would run code in the others. The bind is read-only."""
    folder = tmp_path / "poisoner"
    folder.mkdir()
    (folder / "main.py").write_text(LAYER_ATTACK)
    (folder / "Sequence.toml").write_text('[strategy]\nname = "poisoner"\n')
    shutil.copy(EXAMPLES / "pandas_signal" / "requirements.txt", folder / "requirements.txt")
    deploy_relative(platform, folder)
    raw, recs = platform.follow("poisoner", timeout=180)
    attack = only(recs, "attack")
    for what in ("append", "create", "chmod", "rename", "unlink", "mkdir"):
        assert attack[what] != "succeeded", raw
    layer = _layer_dir(layer_cache, platform, "poisoner")
    assert not (layer / "sitecustomize.py").exists() and not (layer / "evil").exists()
    assert b"poisoned" not in (layer / "numpy" / "__init__.py").read_bytes()
    # A neighbour on the same layer still imports the real numpy.
    neighbour = stage(EXAMPLES / "pandas_signal", tmp_path / "pandas_signal")
    deploy_relative(platform, neighbour)
    _raw, recs = platform.follow("pandas-signal", timeout=180)
    only(recs, "done")
