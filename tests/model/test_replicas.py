"""Replicas on a real local Ray cluster (issue 14): two CPU replicas of the SmolLM2 GGUF, one thread each.

One cluster serves the module (``ray_cluster``: no dashboard, a small object store, two CPUs), which a
run with ``ray="local"`` joins instead of starting its own; the subprocess test starts its own, as a user
would, and ends every process it leaves. Problems are tiny and greedy so the module stays near a minute.
"""

from __future__ import annotations

import csv
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import assert_one_line_error, clean_env

from aimo_gguf.cli import cli
from aimo_gguf.errors import ModelError
from aimo_gguf.gguf.files import default_model_path
from aimo_gguf.pipeline.journal import default_journal
from aimo_gguf.pipeline.problems import read_problems
from aimo_gguf.pipeline.runner import run
from aimo_gguf.replicas import dispatch, on_ray

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.ray]

GREEDY = dict(samples=2, temperature=0.0, max_tokens=24, threads=1, batch_size=2, progress=False)
RAY = dict(ray="local", replicas=2)
# Counters that say what was solved: a replica run must sum to the single engine's (with the same
# --no-cache-prompts the replicas force, prompt tokens included).
COUNTERS = ("problems", "problems_done", "samples", "samples_skipped", "valid_answers", "majority", "early_stopped",
            "fallbacks", "too_long", "cut", "graded", "correct", "pass_at_1_sum", "pass_at_n", "mode_correct",
            "answer_tokens", "finish_reasons", "prompt_tokens", "shared_prompt_tokens", "generated_tokens",
            "kv_preemptions")


@pytest.fixture(scope="module")
def ray_cluster():
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, logging_level=logging.WARNING)
    for s, h in handlers.items():
        signal.signal(s, h)  # ray.init takes SIGTERM: the runner's own handler must be what a test sees
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    """Ten graded problems of the bundled set, with their answers."""
    path = tmp_path_factory.mktemp("replicas") / "p.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "problem", "answer"])
        for p in read_problems("graded")[:10]:
            w.writerow([p.id, p.problem, p.answer])
    return path


@pytest.fixture(scope="module")
def single(problems, tmp_path_factory):
    """The single-engine greedy run (default settings) and its twin with --no-cache-prompts."""
    d = tmp_path_factory.mktemp("single")
    run(problems, output=d / "default.csv", **GREEDY)
    result = run(problems, output=d / "nocache.csv", summary=d / "s.json", cache_prompts=False, **GREEDY)
    return {"submission": (d / "default.csv").read_bytes(), "nocache": (d / "nocache.csv").read_bytes(),
            "summary": json.loads((d / "s.json").read_text()), "answers": result.answers}


def test_the_connection_check_lets_a_real_cluster_through(ray_cluster):
    """What --ray ADDRESS checks before ray.init (issue 20, item 9) passes for a real GCS: its own
    address, and the same through a local name Ray turns into this node's."""
    from aimo_gguf.replicas.cluster import check_reachable

    address = ray.get_runtime_context().gcs_address
    check_reachable(address, timeout=5)
    check_reachable(f"127.0.0.1:{address.rsplit(':', 1)[1]}", timeout=5)


def test_two_replicas_write_the_single_engine_submission_byte_for_byte(ray_cluster, problems, single, tmp_path):
    out, summary, traces = tmp_path / "sub.csv", tmp_path / "s.json", tmp_path / "t.jsonl"
    result = run(problems, output=out, summary=summary, traces=traces, **GREEDY, **RAY)
    assert out.read_bytes() == single["submission"] == single["nocache"]
    mine = json.loads(summary.read_text())
    assert {k: mine[k] for k in COUNTERS} == {k: single["summary"][k] for k in COUNTERS}
    rows = mine["replicas"]
    assert [r["replica"] for r in rows] == [0, 1] and mine["replica_failures"] == 0
    assert sum(r["problems"] for r in rows) == 10 and all(r["problems"] > 0 for r in rows)  # both took work
    assert sum(r["generated_tokens"] for r in rows) == mine["generated_tokens"]
    assert all(r["tokens_per_second"] > 0 for r in rows)
    assert "replica 1" in result.summary.table()
    journal = default_journal(out).read_text().splitlines()
    assert len(journal) == 11  # the header and every problem, once
    samples = [json.loads(line) for line in traces.read_text().splitlines()]  # the one trace file, from both
    ended = sum(n for reason, n in mine["finish_reasons"].items() if reason != "cancelled")
    assert len(samples) == ended and {t["id"] for t in samples} == {p.id for p in read_problems(problems)}


def _replica_processes(state: str = "ray::Replica.solve") -> list[psutil.Process]:
    """This cluster's replica processes running ``solve`` (Ray names a worker's process by its task)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if " ".join(p.cmdline()).startswith(state):
                found.append(p)
        except psutil.Error:
            pass
    return found


def _kill_on_submit(monkeypatch, when, then=None) -> list:
    """Kill a replica's process right after ``when(handle, submissions)`` picks the call just handed to it,
    so it dies with that work outstanding; ``then(handle)`` runs next, before the driver goes on.
    Returns [(pid, problems it held)]."""
    solve, counts, killed = on_ray.RayHandle.solve, {}, []

    def solve_then_kill(self, work):
        solve(self, work)
        counts[self.number] = counts.get(self.number, 0) + 1
        if when(self, counts[self.number], killed):
            psutil.Process(self.pid).kill()
            killed.append((self.pid, len(work.problems)))
            if then is not None:
                then(self)

    monkeypatch.setattr(on_ray.RayHandle, "solve", solve_then_kill)
    return killed


def test_a_killed_replica_loses_nothing_its_problems_finish_on_the_other(ray_cluster, problems, single, tmp_path,
                                                                          capfd, monkeypatch):
    # Killed just after its second call was handed over: that call's problem is outstanding for sure.
    killed = _kill_on_submit(monkeypatch, lambda handle, n, killed: n == 2 and not killed)
    out = tmp_path / "sub.csv"
    result = run(problems, output=out, **{**GREEDY, "batch_size": 1}, **RAY)
    assert killed
    assert out.read_bytes() == single["nocache"]  # every row, each the answer it would have had
    s = result.summary
    assert s.replica_failures == 1 and s.problems_done == 10 and not s.interrupted
    lost = [r for r in s.replicas if r["lost"]]
    assert [r["pid"] for r in lost] == [pid for pid, _ in killed]
    assert len(s.replicas) == 3  # the two, and the replacement of the lost one
    pid, held = killed[0]
    assert held >= 1 and f"(pid {pid} on" in (err := capfd.readouterr().err)
    assert f"{held} unfinished problems go to the others; starting a replacement" in err


def _block(cpus: int):
    """Hold CPUs of the module's cluster, as other work on a shared cluster would (a placement group: no
    process); ``_unblock`` gives them back."""
    group = ray.util.placement_group([{"CPU": cpus}])
    ray.get(group.ready(), timeout=60)
    return group


def _unblock(group) -> None:
    ray.util.remove_placement_group(group)


def test_a_replacement_that_cannot_load_is_lost_in_time_and_the_run_finishes(ray_cluster, problems, single,
                                                                             tmp_path, capfd, monkeypatch):
    blockers = []

    def take_its_cpu(handle):  # the driver waits here: the replacement asked for next finds no CPU
        monkeypatch.setattr(dispatch, "LOAD_TIMEOUT", 1.0)  # the first loads are done: only the replacement's
        blockers.append(_block(1))

    killed = _kill_on_submit(monkeypatch, lambda handle, n, killed: n == 2 and not killed, take_its_cpu)
    try:
        out = tmp_path / "sub.csv"
        result = run(problems, output=out, **{**GREEDY, "batch_size": 1}, **RAY)
    finally:
        for blocker in blockers:
            _unblock(blocker)
    assert killed and blockers
    assert out.read_bytes() == single["nocache"]  # the survivor solved the rest
    s = result.summary
    assert s.replica_failures == 2 and s.problems_done == 10 and not s.interrupted
    err = capfd.readouterr().err
    assert "replica 2 (pid 0 on ?) was lost (not loaded after 1 s): 0 unfinished problems go to the others; " \
           "no replacement" in err, err


def test_a_busy_cluster_runs_on_the_replicas_that_loaded(ray_cluster, problems, single, tmp_path, capfd):
    blocker = _block(1)  # one of the two CPUs is taken: the second replica never loads
    try:
        start = time.monotonic()
        result = run(problems, output=tmp_path / "sub.csv", **GREEDY, **RAY)
        seconds = time.monotonic() - start
    finally:
        _unblock(blocker)
    assert (tmp_path / "sub.csv").read_bytes() == single["nocache"]
    s = result.summary
    assert [r["replica"] for r in s.replicas] == [0] and s.replica_failures == 0 and not s.interrupted
    assert seconds < 60  # it did not wait for the replica still loading, before or after the problems
    assert "free now" in capfd.readouterr().err
    assert _no_replica_within(10)


def test_a_time_limit_shorter_than_the_loads_writes_every_fallback(ray_cluster, problems, tmp_path):
    blocker = _block(2)  # no replica can start: its load is waited for only until the deadline
    try:
        limit = 3.0
        start = time.monotonic()
        result = run(problems, output=tmp_path / "sub.csv", summary=tmp_path / "s.json",
                     **{**GREEDY, "time_limit": limit}, **RAY)
        assert time.monotonic() - start < limit
    finally:
        _unblock(blocker)
    rows = list(csv.DictReader((tmp_path / "sub.csv").open()))
    assert len(rows) == 10 and {r["answer"] for r in rows} == {"0"}
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["not_started"] == 10 and s["fallbacks"] == 10 and not s["interrupted"]
    assert result.exit_code == 0
    assert _no_replica_within(10)


def test_every_replica_lost_writes_the_results_then_one_error_line(ray_cluster, problems, single, tmp_path, runner,
                                                                   monkeypatch):
    monkeypatch.setattr(dispatch, "MAX_LOSSES_PER_REPLICA", 0)
    killed = _kill_on_submit(monkeypatch, lambda handle, n, killed: n == 2)  # each, after one problem
    out, summary = tmp_path / "sub.csv", tmp_path / "s.json"
    result = runner.invoke(cli, ["run", str(problems), "-o", str(out), "--summary", str(summary), "-q", "-n", "2",
                                 "--temperature", "0", "--max-tokens", "24", "-t", "1", "-b", "1", "--ray",
                                 "--replicas", "2"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and len(killed) == 2
    assert result.stderr.strip().splitlines()[-1].startswith("Error: every replica was lost (2 in all)")
    rows = list(csv.DictReader(out.open()))
    expected = list(csv.DictReader(single["nocache"].decode().splitlines()))
    s = json.loads(summary.read_text())
    assert len(rows) == 10 and s["interrupted"] and s["stopped_by"].startswith("EngineError: every replica was lost")
    done = {e["id"] for e in map(json.loads, default_journal(out).read_text().splitlines()[1:])}
    assert len(done) == s["problems_done"] >= 2  # the finished ones, each with its answer; fallbacks for the rest
    assert [r for r in rows if r["id"] in done] == [r for r in expected if r["id"] in done]


def test_the_time_limit_holds_across_replicas_with_every_row(ray_cluster, tmp_path):
    path = tmp_path / "many.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "problem"])
        for i in range(40):
            w.writerow([f"q{i}", f"What is {i + 3} times {i + 7}? Explain every step."])
    limit = 10.0  # 1 s of margin: the loads are bounded by the deadline too, but a loaded CI is slow to stop
    start = time.monotonic()
    result = run(path, output=tmp_path / "sub.csv", **{**GREEDY, "max_tokens": 96, "time_limit": limit}, **RAY)
    assert time.monotonic() - start < limit
    rows = list(csv.DictReader((tmp_path / "sub.csv").open()))
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(40)]
    s = result.summary
    assert s.problems_done + s.not_started == 40 and s.cut + s.not_started > 0


def test_sigterm_of_the_driver_writes_every_row_and_ends_its_cluster(problems, single, tmp_path):
    out, summary = tmp_path / "sub.csv", tmp_path / "s.json"
    args = ["run", str(problems), "-o", str(out), "--summary", str(summary), "-q", "-n", "2", "--temperature", "0",
            "--max-tokens", "24", "-t", "1", "-b", "1", "--ray", "--replicas", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "aimo_gguf", *args], env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    started = []
    try:
        _wait_for_journal(default_journal(out), 3, proc)
        started = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10  # every row: the finished answers and the fallback for the rest
    s = json.loads(summary.read_text())
    assert s["interrupted"] and s["stopped_by"] == "SIGTERM" and s["problems_done"] >= 2
    _, alive = psutil.wait_procs(started, timeout=20)  # the run stopped its own cluster
    try:
        assert not [p for p in alive if _running(p)], alive
    finally:
        _end(alive)


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_journal(journal: Path, problems: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not (journal.exists() and len(journal.read_text().splitlines()) > problems):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"the Ray run never journaled {problems} problems"
        time.sleep(0.05)


def test_sigkill_of_the_driver_then_resume_gives_the_uninterrupted_submission(ray_cluster, problems, single,
                                                                             tmp_path):
    out = tmp_path / "sub.csv"
    args = ["run", str(problems), "-o", str(out), "-q", "-n", "2", "--temperature", "0", "--max-tokens", "24",
            "-t", "1", "-b", "1", "--ray", "--replicas", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "aimo_gguf", *args], env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    started = []
    try:
        _wait_for_journal(default_journal(out), 3, proc)
        started = psutil.Process(proc.pid).children(recursive=True)  # its Ray cluster: ended below
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        _end(started)
    assert not out.exists()  # killed before it could write: only the journal holds answers
    result = run(problems, output=out, resume=True, **GREEDY, **RAY)
    assert result.summary.resumed >= 3
    assert out.read_bytes() == single["nocache"]


def _end(processes: list[psutil.Process]) -> None:
    """End the processes a killed driver left (its Ray cluster), by their ids, and wait for them."""
    for p in processes:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)


def test_a_model_cut_short_is_one_clear_error_before_any_replica_loads(ray_cluster, problems, tmp_path):
    """The driver checks the file before it starts a replica (a replica that fails to load anyway is the logic
    tier's: tests/logic/test_replicas.py, LoadFailed)."""
    bad = tmp_path / "bad.gguf"
    good = default_model_path()
    bad.write_bytes(good.read_bytes()[: 1 << 16])  # a GGUF header, then nothing
    start = time.monotonic()
    with pytest.raises(ModelError, match=r"bad.gguf is truncated"):
        run(problems, output=tmp_path / "sub.csv", model=str(bad), **GREEDY, **RAY)
    assert time.monotonic() - start < 60  # an error, not a hang
    assert _no_replica_within(10)  # and no replica left behind


@pytest.mark.parametrize("flags, message", [
    (["--gpus-per-replica", "1", "--replicas", "2"], "the Ray cluster has no GPU"),
    ([], "needs --replicas N"),
    (["--replicas", "3"], "need 3 CPUs"),
])
def test_a_replica_plan_the_cluster_cannot_hold_is_one_line(ray_cluster, problems, tmp_path, runner, flags, message):
    # The CLI in this process uses the module's cluster (two CPUs, no GPU), as it would a notebook's.
    result = runner.invoke(cli, ["run", str(problems), "-o", str(tmp_path / "s.csv"), "-q", "-t", "1", "--ray",
                                 *flags])
    assert_one_line_error(result, message)
    assert not (tmp_path / "s.csv").exists()


def test_no_replica_process_outlives_a_run(ray_cluster, problems, tmp_path):
    run(problems, output=tmp_path / "sub.csv", **GREEDY, **RAY)
    assert _no_replica_within(10)


def _no_replica_within(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _replica_processes("ray::Replica"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)  # ray.kill is asynchronous
    return True
