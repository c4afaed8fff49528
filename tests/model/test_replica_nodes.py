"""A lost node (issue 14): Ray's multi-node test cluster on this machine, a node removed mid-run.

The head holds no CPU, so the replicas live on three one-CPU worker nodes (two replicas and a spare);
the node of a replica just handed work is removed without notice, as a machine that dies would be.
"""

from __future__ import annotations

import logging

import psutil
import pytest

from aimo_gguf.pipeline.runner import run
from aimo_gguf.replicas import on_ray

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")
pytestmark = [pytest.mark.slow, pytest.mark.ray]

STORE = 80 * 2**20
GREEDY = dict(samples=2, temperature=0.0, max_tokens=24, threads=1, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def cluster():
    import signal

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                                     "object_store_memory": STORE})
    nodes = [c.add_node(num_cpus=1, object_store_memory=STORE) for _ in range(3)]
    ray.init(address=c.address, logging_level=logging.WARNING)
    for s, h in handlers.items():
        signal.signal(s, h)
    yield c, nodes
    ray.shutdown()
    c.shutdown()


def test_a_lost_node_loses_nothing(cluster, tmp_path, capfd, monkeypatch):
    c, nodes = cluster
    raylets = {n.all_processes["raylet"][0].process.pid: n for n in nodes}
    path = tmp_path / "p.csv"
    path.write_text("id,problem\n" + "".join(f"q{i},What is {i + 3} times {i + 7}?\n" for i in range(12)))
    reference = run(path, output=tmp_path / "single.csv", cache_prompts=False, **GREEDY)
    solve, counts, removed = on_ray.RayHandle.solve, {}, []

    def solve_then_remove_its_node(self, work):
        # Its node goes just after a second call was handed over: that call's problem is outstanding for sure.
        solve(self, work)
        counts[self.number] = counts.get(self.number, 0) + 1
        if counts[self.number] == 2 and not removed:
            c.remove_node(raylets[psutil.Process(self.pid).ppid()], allow_graceful=False)
            removed.append((self.pid, len(work.problems)))

    monkeypatch.setattr(on_ray.RayHandle, "solve", solve_then_remove_its_node)
    result = run(path, output=tmp_path / "sub.csv", ray="local", replicas=2, **{**GREEDY, "batch_size": 1})
    assert removed
    assert (tmp_path / "sub.csv").read_bytes() == (tmp_path / "single.csv").read_bytes()
    assert result.answers == reference.answers
    s = result.summary
    assert s.replica_failures == 1 and s.problems_done == 12
    pid, held = removed[0]
    assert [r["pid"] for r in s.replicas if r["lost"]] == [pid]
    assert held >= 1 and f"{held} unfinished problems go to the others; starting a replacement" in capfd.readouterr().err
