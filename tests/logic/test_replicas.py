"""The replica driver on scripted replicas (no Ray, no model): every problem answered once whatever is lost,
what a lost replica costs, when a load fails the run, the deadline; and the replica plan on given resources."""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import fields

import pytest
from fake_replicas import FakeLauncher, FakeReplica, answer_then, loaded
from fakes import Clock, problems_of

from aimo_gguf.config import RunConfig
from aimo_gguf.engine.api import EngineStats
from aimo_gguf.errors import EngineError, InputError, ModelError
from aimo_gguf.replicas import dispatch
from aimo_gguf.replicas.dispatch import Dispatcher
from aimo_gguf.replicas.handle import Died, Failed, LoadFailed, ReplicaState
from aimo_gguf.replicas.plan import plan_replicas
from aimo_gguf.styles.tir import ToolStats


def _dispatcher(replicas: list[FakeReplica], *, asked: int | None = None, clock: Clock | None = None,
                step: float = 0.0, deadline: float | None = None, keep_back: float = 0.0):
    clock = clock or Clock()
    launcher = FakeLauncher(replicas, clock=clock, step=step)
    d = Dispatcher(launcher, RunConfig(samples=2), replicas=asked or len(replicas), model_path="m.gguf",
                   deadline=deadline, clock=clock, keep_back=keep_back)
    return d, launcher, clock


def _solve(d: Dispatcher, n: int, **kw) -> list[int]:
    d.start()
    return [r.index for r in d.results(problems_of(n), clock=d.clock, **kw)]


def _lost_stream(kind: str):
    return {"died": Died("SIGSEGV"), "engine-error": Failed("EngineError: llama_decode failed",
                                                            error=EngineError("llama_decode failed")),
            "bug": Failed("RuntimeError: a bug")}[kind]


@pytest.mark.parametrize("problems", [1, 2, 5, 9])
@pytest.mark.parametrize("batches", [(1,), (2, 2), (1, 4, 2)])
@pytest.mark.parametrize("lost_after", [None, 0, 1])
def test_every_problem_is_answered_once_whatever_a_replica_loses(problems, batches, lost_after):
    first = [answer_then(lost_after, Died("killed"))] if lost_after is not None else []
    replicas = [FakeReplica(load=[loaded(batch=2 * b)], scripts=first if i == 0 else []) for i, b in enumerate(batches)]
    d, launcher, _ = _dispatcher([*replicas, FakeReplica(load=[loaded()])])
    indices = _solve(d, problems)
    assert sorted(indices) == list(range(problems))  # each once: a lost call's problems went to another
    lost = lost_after is not None and bool(replicas[0].works)
    assert d.failures == int(lost)
    assert [r["lost"] for r in d.replica_rows()].count(True) == int(lost)
    assert sum(r["problems"] for r in d.replica_rows()) == problems  # a lost replica's answers count too
    handed = sorted(i for r in launcher.started for w in r.works for i, _ in w.problems)
    assert set(handed) == set(range(problems))


@pytest.mark.parametrize("kind", ["died", "engine-error", "bug"])
@pytest.mark.parametrize("answered", [0, 1])
def test_a_lost_replica_s_unanswered_problems_come_first_and_a_replacement_loads(kind, answered, capsys):
    lost = FakeReplica(load=[loaded(batch=4)], scripts=[answer_then(answered, _lost_stream(kind))])
    replacement = FakeReplica(load=[loaded(batch=4)])
    d, launcher, _ = _dispatcher([lost, replacement], asked=1)
    assert sorted(_solve(d, 2)) == [0, 1]
    assert lost.closed and d.failures == 1
    assert launcher.started == [lost, replacement]  # in the lost one's slot
    assert [i for i, _ in replacement.works[0].problems] == [0, 1][answered:]
    err = capsys.readouterr().err
    assert f"replica 0 (pid 7 on n) was lost ({_lost_stream(kind).why}): {2 - answered} unfinished problems go " \
           f"to the others; starting a replacement" in err
    assert [m.state for m in d.members] == [ReplicaState.LOST, ReplicaState.IDLE]


def test_an_input_error_in_a_stream_ends_the_run():
    error = InputError("no such prompt family")
    d, _, _ = _dispatcher([FakeReplica(load=[loaded()], scripts=[answer_then(0, Failed(str(error), error))])])
    with pytest.raises(InputError, match="no such prompt family"):
        _solve(d, 2)


@pytest.mark.parametrize("limit", [0, 1, 2])
def test_replacements_stop_at_the_limit_per_slot_then_the_run_is_one_error(monkeypatch, limit, capsys):
    monkeypatch.setattr(dispatch, "MAX_LOSSES_PER_REPLICA", limit)
    dying = [FakeReplica(load=[loaded()], scripts=[answer_then(0, Died("killed"))]) for _ in range(limit + 1)]
    d, launcher, _ = _dispatcher(dying, asked=1)
    with pytest.raises(EngineError, match=rf"^every replica was lost \({limit + 1} in all\), 3 problems unsolved"):
        _solve(d, 3)
    assert len(launcher.started) == limit + 1 and d.failures == limit + 1
    assert capsys.readouterr().err.count("; no replacement") == 1


@pytest.mark.parametrize(("event", "error", "message"), [
    (LoadFailed(ModelError("replica 0 (n): not a GGUF file")), ModelError, r"^replica 0 \(n\): not a GGUF file$"),
    (Died("out of memory, or killed"), EngineError,
     r"^replica 0 died while loading the model \(out of memory, or killed\)$"),
])
def test_a_first_load_that_fails_is_the_run_s_error(event, error, message):
    d, _, _ = _dispatcher([FakeReplica(load=[event]), FakeReplica()])
    with pytest.raises(error, match=message):
        d.start()


@pytest.mark.parametrize(("event", "why", "again"), [
    (LoadFailed(ModelError("replica 1 (n): out of memory")), "its load failed: replica 1 (n): out of memory",
     "no replacement"),
    (Died("killed"), "died while loading", "starting a replacement"),
])
def test_a_later_load_that_fails_loses_that_replica_only(event, why, again, capsys):
    slow = FakeReplica()  # answers nothing while the first loads: its answer comes during the run
    d, launcher, _ = _dispatcher([FakeReplica(load=[loaded()]), slow, FakeReplica(load=[loaded()])])
    d.start()
    slow.pending.append(event)
    assert sorted(r.index for r in d.results(problems_of(4), clock=d.clock)) == [0, 1, 2, 3]
    err = capsys.readouterr().err
    assert d.failures == 1 and f"replica 1 (pid 0 on ?) was lost ({why}): 0 unfinished problems go to the " \
                               f"others; {again}" in err
    assert len(launcher.started) == (4 if again.startswith("starting") else 3)


@pytest.mark.parametrize("load_timeout", [5.0, 30.0])
def test_no_load_before_the_timeout_is_one_error_naming_the_wait(monkeypatch, load_timeout):
    monkeypatch.setattr(dispatch, "LOAD_TIMEOUT", load_timeout)
    d, _, clock = _dispatcher([FakeReplica(), FakeReplica()], step=1.0)
    with pytest.raises(EngineError, match=rf"^2 replicas did not load within {load_timeout:.0f} s$"):
        d.start()
    assert clock.now - 1000.0 >= load_timeout


@pytest.mark.parametrize("keep_back", [0.0, 2.0])
def test_no_load_before_the_deadline_gives_every_problem_no_result(keep_back):
    d, launcher, clock = _dispatcher([FakeReplica()], step=1.0, deadline=1010.0, keep_back=keep_back)
    assert _solve(d, 3, deadline=1010.0) == []
    assert clock.now <= 1010.0 - keep_back + 1.0 and all(r.closed for r in launcher.started)
    assert d.info.n_layers == 0 and "no replica loaded within --time-limit" in d.info.notes[-1]


@pytest.mark.parametrize("deadline", [None, 0.0, 100.0, 1234.5])
@pytest.mark.parametrize("keep_back", [0.0, 2.0])
def test_the_replicas_deadline_keeps_back_the_time_to_end_them(deadline, keep_back):
    d, _, _ = _dispatcher([FakeReplica()], keep_back=keep_back)
    assert d.cut(deadline) == (None if deadline is None else deadline - keep_back)


def test_a_result_that_arrives_in_the_wait_past_the_late_limit_is_kept():
    # The one wait moves the clock past deadline + late: what that wait brought still counts.
    d, _, clock = _dispatcher([FakeReplica(load=[loaded(batch=4)])], step=10.0)
    d.start()
    results = list(d.results(problems_of(2), deadline=clock.now + 5.0, clock=clock, margin=2.0))
    assert [r.index for r in results] == [0, 1]
    assert d.members[0].handle.works[0].deadline_at is not None


@pytest.mark.parametrize("replicas, problems", [(1, 4), (2, 7), (3, 3)])
def test_the_counters_are_the_replicas_totals(replicas, problems):
    d, _, _ = _dispatcher([FakeReplica(load=[loaded()]) for _ in range(replicas)])
    _solve(d, problems)
    d.final_counters()
    rows = d.replica_rows()
    assert sum(r["problems"] for r in rows) == problems
    assert d.stats.generated_tokens == sum(r["generated_tokens"] for r in rows) == 10 * problems
    assert d.progress_note().startswith(f"replicas={replicas}/{replicas} done=")


# --- the plan ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "gpus", "cpus", "message"), [
    ({"gpus_per_replica": 1.0, "replicas": 2}, 0, 8, "the Ray cluster has no GPU"),
    ({}, 0, 8, "needs --replicas N"),
    ({"replicas": 3, "threads": 1}, 0, 2, "need 3 CPUs"),
    ({"replicas": 3}, 2, 8, "need 3 GPUs"),
    ({"replicas": 2, "threads": 4}, 0, 6, "need 8 CPUs"),
])
def test_a_plan_the_cluster_cannot_hold_is_one_line(options, gpus, cpus, message):
    with pytest.raises(InputError, match=message):
        plan_replicas(RunConfig(ray="local", **options), gpus=gpus, cpus=cpus, free_gpus=gpus, free_cpus=cpus,
                      threads_here=8, load_timeout=900)


@pytest.mark.parametrize(("options", "gpus", "cpus", "expected"), [
    ({}, 4, 16, (4, 1.0, 1, 2)),
    ({"gpus_per_replica": 0.5}, 2, 16, (4, 0.5, 1, 2)),
    ({"replicas": 2}, 0, 8, (2, 0.0, 4, 4)),
    ({"replicas": 3, "threads": 2}, 0, 8, (3, 0.0, 2, 2)),
    ({"replicas": 16}, 0, 16, (16, 0.0, 1, 1)),
])
def test_the_plan_fills_what_was_not_asked_for(options, gpus, cpus, expected):
    plan = plan_replicas(RunConfig(ray="local", **options), gpus=gpus, cpus=cpus, free_gpus=gpus, free_cpus=cpus,
                         threads_here=8, load_timeout=900)
    assert (plan.replicas, plan.gpus_each, plan.cpus_each, plan.threads) == expected
    assert plan.replicas * plan.gpus_each <= gpus and plan.replicas * plan.cpus_each <= cpus
    assert plan.notes[-1].startswith(f"{plan.replicas} replicas on a local Ray cluster")


@pytest.mark.parametrize("cache, expected", [(None, False), (True, True), (False, False)])
@pytest.mark.parametrize("free", [0, 1, 8])
def test_prompt_caching_is_off_unless_asked_and_busy_resources_earn_a_note(cache, expected, free):
    plan = plan_replicas(RunConfig(ray="local", replicas=2, threads=1, cache_prompts=cache), gpus=0, cpus=8,
                         free_gpus=0, free_cpus=free, threads_here=8, load_timeout=900)
    assert plan.cache_prompts is expected
    assert any("--cache-prompts is off unless asked" in n for n in plan.notes) is (cache is None)
    assert any("free now" in n for n in plan.notes) is (free < 2)


# --- the counters that cross from a replica -----------------------------------------------------------------


def _engine_stats(i: int) -> EngineStats:
    return EngineStats(generated_tokens=i + 1, prompt_tokens=3 * i, decode_seconds=0.5 * i, steps=i,
                       finish_reasons=Counter({"stop": i, "length": 1}))


def _tool_stats(i: int) -> ToolStats:
    stats = ToolStats()
    for status in ["ok", "error", "timeout"][: i + 1]:
        stats.record(status, 0.25 * (i + 1))
    stats.count_sample()
    return stats


@pytest.mark.parametrize("n", [0, 1, 4])
def test_merged_engine_counters_are_each_field_s_sum_and_a_snapshot_stays_put(n):
    many = [_engine_stats(i) for i in range(n)]
    total = EngineStats.merged(many)
    for f in fields(EngineStats):
        if f.name == "finish_reasons":
            assert total.finish_reasons == sum((s.finish_reasons for s in many), Counter())
        else:
            assert getattr(total, f.name) == sum(getattr(s, f.name) for s in many)
    for stats in many:
        copy = pickle.loads(pickle.dumps(stats.snapshot()))
        stats.generated_tokens += 5
        stats.finish_reasons["stop"] += 1
        assert copy.generated_tokens == stats.generated_tokens - 5
        assert copy.finish_reasons["stop"] == stats.finish_reasons["stop"] - 1


@pytest.mark.parametrize("n", [0, 1, 3])
def test_merged_tool_counters_are_each_count_s_sum_and_cross_processes(n):
    many = [_tool_stats(i) for i in range(n)]
    total = ToolStats.merged(pickle.loads(pickle.dumps(s.snapshot())) for s in many)
    assert total.to_dict() == {k: round(sum(s.to_dict()[k] for s in many), 3) for k in ToolStats().to_dict()}
    driver = _tool_stats(2)
    driver.assign(total)  # the replicas' totals replace the driver's own
    assert driver.to_dict() == total.to_dict()
    driver.record("ok", 1.0)  # and its lock still works
    assert driver.calls == total.calls + 1
