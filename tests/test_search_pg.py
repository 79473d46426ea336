"""tinycnn.search on PostgreSQL (issue #16 item 4): a REAL server, started for this session from
Debian's `postgresql` package (a data folder under /tmp, a loopback port; `.ci/run` installs it).
Two worker processes share one study, a second search continues it, a killed worker's trial is
failed and queued again by its heartbeat, parents racing on an empty database all get the
schema, an unreachable URL is one clear error. Skipped only where PostgreSQL is not installed.
Tiny trials: 256 MNIST training images, 200 validation images, one epoch."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState

from tinycnn import search
from tinycnn.data import Split, Splits
from tinycnn.search import SearchError, mask_url, run_search

from test_search import TINY_SPACE as SEARCH_TINY_SPACE
from test_search import _quiet  # noqa: F401  (autouse: Optuna's experimental/future warnings, as there)

TINY_SPACE = SEARCH_TINY_SPACE.replace("EPOCHS", "1")  # the same cheap space as test_search's


def _pg_bin() -> Path | None:
    """The newest installed server's binaries (Debian keeps them off PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """initdb + pg_ctl as `postgres` (the server refuses root) in a folder directly under /tmp
    (pytest's tmp_path is unreadable to `postgres`), socket in that folder, loopback only."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="tinycnn-pg-", dir="/tmp"))
        self.as_pg = []
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.root, pg.pw_uid, pg.pw_gid)
            self.as_pg = ["runuser", "-u", "postgres", "--"]
        self.port, self.databases = None, 0

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_pg, str(self.bin / tool), *args], check=False, capture_output=True, text=True,
                              timeout=120)

    def start(self) -> None:
        # --no-locale gives a SQL_ASCII database, which psycopg 3 reads as bytes unless the client
        # asks for UTF-8: rdb_storage does, and this server checks that it does.
        done = self._run("initdb", "-D", str(self.root / "data"), "--no-locale", "-A", "trust", "-U", "postgres")
        assert done.returncode == 0, done.stderr
        for _ in range(5):  # a port taken meanwhile fails at once: try another
            port = _free_port()
            done = self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "-t", "60",
                             "-o", f"-h 127.0.0.1 -p {port} -k {self.root} -c fsync=off", "start")
            if done.returncode == 0:
                self.port = port
                return
        raise RuntimeError(f"PostgreSQL did not start: {done.stdout}{done.stderr}\n"
                           f"{(self.root / 'log').read_text(errors='replace')}")

    def new_database(self) -> str:
        self.databases += 1
        name = f"study{self.databases}"
        done = self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        assert done.returncode == 0, done.stderr
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.port is not None:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                    "apt-get install postgresql, as .ci/run does")
    server = Server(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty database of the session's server."""
    return pg_server.new_database()


@pytest.fixture(scope="module")
def tiny_splits(mnist_splits):
    """Copies, not views (a view would carry the whole dataset into a spawned worker); no test split."""
    return Splits(mnist_splits.info, Split(mnist_splits.train.x[:256].clone(), mnist_splits.train.y[:256].clone()),
                  Split(mnist_splits.val.x[:200].clone(), mnist_splits.val.y[:200].clone()), None)


@pytest.fixture
def tiny_space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(TINY_SPACE)
    return path


def _run(url, splits, space, **kwargs):
    kwargs = {"budget": 1500, "n_trials": 2, "study_name": "s", "sampler": "random", "pruner": "none",
              "log": lambda line: None, "seed": 0, **kwargs}
    return run_search("mnist", space_path=space, splits=splits, storage=url, **kwargs)


def _trials(url, name="s"):
    return optuna.load_study(study_name=name, storage=search.rdb_storage(url)).get_trials(deepcopy=False)


# --- URLs (no server) -----------------------------------------------------------------------

def test_a_password_is_masked_and_only_postgresql_urls_are_taken():
    assert mask_url("postgresql://ann:s3cr:et@db.lan:5433/tiny") == "postgresql://ann:***@db.lan:5433/tiny"
    assert mask_url("postgresql+psycopg://ann@db/tiny") == "postgresql+psycopg://ann@db/tiny"
    assert search.database_url("postgresql+psycopg://ann:x@db/tiny").startswith("postgresql+psycopg://")
    for url, named in [("sqlite:///study.db", "SQLite"), ("mysql://a:pw@b/c", "PostgreSQL"),
                       ("postgresql+asyncpg://a:pw@b/c", "driver psycopg"), ("postgresql://a:pw@b:port/c", "valid")]:
        with pytest.raises(SearchError, match=named) as e:
            search.storage_location("s", url)
        assert "pw" not in str(e.value)


# --- a real server --------------------------------------------------------------------------

@pytest.mark.slow
def test_two_worker_processes_share_one_study(pg_url, tiny_space, tiny_splits):
    """Real (tiny) trials in two spawned processes against one PostgreSQL study."""
    study = _run(pg_url, tiny_splits, tiny_space, n_trials=4, workers=2)
    trials = _trials(pg_url)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # all present, numbers unique
    assert all(t.state == TrialState.COMPLETE for t in trials)
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids
    assert len(study.trials) == 4 and study.user_attrs["budget"] == 1500


def test_the_same_command_continues_a_study_on_postgresql(pg_url, tiny_space, tiny_splits):
    lines = []
    _run(pg_url, tiny_splits, tiny_space, n_trials=1)
    study = _run(pg_url, tiny_splits, tiny_space, n_trials=1, log=lines.append)
    assert [(t.number, t.state) for t in study.trials] == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE)]
    assert any("continuing study 's': 1 trial(s)" in line for line in lines)
    with pytest.raises(SearchError, match="under 1500"):
        _run(pg_url, tiny_splits, tiny_space, budget=1000, n_trials=0)


def test_parents_racing_on_an_empty_database_all_get_the_schema(pg_url):
    """Without the retry in rdb_storage, 3 of 4 fail with "duplicate key ... pg_type_typname_nsp_index"."""
    results = []

    def open_study():
        try:
            optuna.create_study(storage=search.rdb_storage(pg_url), study_name="raced", load_if_exists=True)
            results.append("ok")
        except Exception as e:  # noqa: BLE001 - reported below
            results.append(repr(e))

    threads = [threading.Thread(target=open_study) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["ok"] * 4


KILLED_WORKER = """
import sys, time
import torch
from tinycnn import search
from tinycnn.data import Split, Splits
from tinycnn.datasets import dataset_info

search.HEARTBEAT_INTERVAL_S, search.GRACE_PERIOD_S = 1, 2
def hang(*a, **k):  # a trial that has sampled all its parameters says so, and hangs until it is killed
    open(sys.argv[3], "w").close()
    time.sleep(600)
search.fit_only = hang
x, y = torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)
search.run_search("mnist", 1500, space_path=sys.argv[1], study_name="s", storage=sys.argv[2], n_trials=1,
                  sampler="random", pruner="none", splits=Splits(dataset_info("mnist"), Split(x, y), Split(x, y), None))
"""


def _beating(url) -> bool:
    """Whether a worker has recorded itself on a RUNNING trial and that trial's heartbeat thread
    has written its first beat (asynchronously: a trial killed before it never goes stale)."""
    import sqlalchemy

    if not any("pid" in t.user_attrs for t in _trials(url) if t.state == TrialState.RUNNING):
        return False
    engine = sqlalchemy.create_engine(url, connect_args={"client_encoding": "utf8"})
    try:
        with engine.connect() as c:
            return bool(c.execute(sqlalchemy.text("SELECT count(*) FROM trial_heartbeats")).scalar())
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_killed_workers_trial_is_failed_and_queued_again_by_its_heartbeat(pg_url, tiny_space, tiny_splits,
                                                                            monkeypatch):
    """A real kill -9 in the middle of a trial; the next search finds its heartbeat stale."""
    monkeypatch.setattr(search, "HEARTBEAT_INTERVAL_S", 1)
    monkeypatch.setattr(search, "GRACE_PERIOD_S", 2)
    _run(pg_url, tiny_splits, tiny_space, n_trials=0)  # the study exists before the worker polls it
    fitting = tiny_space.parent / "fitting"  # killed in fit, not while it still samples its parameters
    worker = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, str(tiny_space), pg_url, str(fitting)])
    try:
        deadline = time.monotonic() + 120
        while not (fitting.exists() and _beating(pg_url)):
            assert worker.poll() is None and time.monotonic() < deadline, "the worker never started its trial"
            time.sleep(0.5)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    time.sleep(3)  # past the grace period
    lines = []
    study = _run(pg_url, tiny_splits, tiny_space, n_trials=1, log=lines.append)
    first, again = study.trials
    assert (first.state, again.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert first.user_attrs["pid"] == worker.pid and again.user_attrs["pid"] == os.getpid()
    assert again.params == first.params and again.system_attrs["failed_trial"] == 0
    assert any("trial 0 sent no heartbeat" in line and "queued again as trial 1" in line for line in lines)


def test_cli_with_an_unreachable_database_is_one_clear_error(tiny_space):
    pytest.importorskip("psycopg")
    port = _free_port()  # closed again: nothing listens there
    url = f"postgresql://ann:hunter2@127.0.0.1:{port}/tiny"
    r = subprocess.run([sys.executable, "-m", "tinycnn", "search", "mnist", "--budget", "1500", "--space",
                        str(tiny_space), "--trials", "1", "--storage", url], check=False, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2, r.stderr
    assert f"postgresql://ann:***@127.0.0.1:{port}/tiny" in r.stderr and "check that the PostgreSQL server" in r.stderr
    assert "hunter2" not in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
