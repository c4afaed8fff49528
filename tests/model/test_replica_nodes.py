"""A lost node (issue 14): Ray's multi-node test cluster on this machine, a node removed mid-run.

The head holds no CPU, so the replicas live on three one-CPU worker nodes (two replicas and a spare);
the node of a busy replica is removed without notice, as a machine that dies would be.
"""

from __future__ import annotations

import logging

import psutil
import pytest

from aimo_gguf.runner import run

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


def test_a_lost_node_loses_nothing(cluster, tmp_path):
    c, nodes = cluster
    raylets = {n.all_processes["raylet"][0].process.pid: n for n in nodes}
    path = tmp_path / "p.csv"
    path.write_text("id,problem\n" + "".join(f"q{i},What is {i + 3} times {i + 7}?\n" for i in range(12)))
    reference = run(path, output=tmp_path / "single.csv", cache_prompts=False, **GREEDY)
    removed = []

    def remove_a_busy_node(result):
        if removed:
            return
        for p in psutil.Process().children(recursive=True):
            try:
                if " ".join(p.cmdline()).startswith("ray::Replica.solve") and p.ppid() in raylets:
                    c.remove_node(raylets[p.ppid()], allow_graceful=False)
                    removed.append(p.pid)
                    return
            except psutil.Error:
                pass

    result = run(path, output=tmp_path / "sub.csv", on_result=remove_a_busy_node, ray="local", replicas=2,
                 **{**GREEDY, "batch_size": 1})
    assert removed
    assert (tmp_path / "sub.csv").read_bytes() == (tmp_path / "single.csv").read_bytes()
    assert result.answers == reference.answers
    s = result.summary
    assert s.replica_failures == 1 and s.problems_done == 12
    assert [r["pid"] for r in s.replicas if r["lost"]] == removed
