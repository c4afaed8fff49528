"""Which replicas a run gets, and with what: decided from the cluster's resources alone (no Ray here).

The plan is checked against what the cluster has before anything starts, so no
replica waits forever for resources that are not there; what other work holds
now only earns a note (replicas that do not fit wait for them, within bounds).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import RunConfig
from ..errors import InputError

EPSILON = 1e-9  # Ray's resources are floats: 0.1 + 0.2 GPUs must fit in 0.3


@dataclass(frozen=True)
class ReplicaPlan:
    """How many replicas, and what each holds."""

    replicas: int
    gpus_each: float  # GPUs reserved for each (0: a CPU replica)
    cpus_each: int  # CPUs reserved for each on the cluster (1 beside a GPU, else its threads)
    threads: int  # llama.cpp threads of each
    cache_prompts: bool  # off unless asked for: see ``plan_replicas``
    notes: tuple[str, ...]  # said once to the user


def plan_replicas(config: RunConfig, *, gpus: float, cpus: float, free_gpus: float, free_cpus: float,
                  threads_here: int, load_timeout: float) -> ReplicaPlan:
    """The plan for ``config`` (its ``replicas``, ``gpus_per_replica``, ``threads``, ``cache_prompts``) on a
    cluster of ``gpus`` and ``cpus``, of which ``free_*`` are not held by other work; ``threads_here``: this
    machine's default thread count, shared out as if every replica ran here. A plan the cluster cannot hold
    is one InputError line."""
    per = config.gpus_per_replica
    if per is None:
        per = 1.0 if gpus else 0.0
    if per > 0 and not gpus:
        raise InputError(f"--gpus-per-replica {per:g}: the Ray cluster has no GPU (CPU replicas: "
                         f"--gpus-per-replica 0 or leave it out)")
    replicas = config.replicas
    if replicas is None:
        if not per:
            raise InputError("--ray on a cluster without GPUs needs --replicas N (N CPU replicas)")
        replicas = max(1, int(gpus // per))
    if per * replicas > gpus + EPSILON:
        raise InputError(f"{replicas} replicas x {per:g} GPUs need {per * replicas:g} GPUs; the Ray cluster "
                         f"has {gpus:g}")
    threads = config.threads or max(1, threads_here // replicas)
    cpus_each = 1 if per else threads
    if cpus_each * replicas > cpus + EPSILON:
        raise InputError(f"{replicas} replicas x {cpus_each} threads need {cpus_each * replicas} CPUs; the Ray "
                         f"cluster has {cpus:g} (fewer --replicas or --threads)")
    notes = []
    if per * replicas > free_gpus + EPSILON or cpus_each * replicas > free_cpus + EPSILON:
        notes.append(f"--ray: the cluster has {free_cpus:g} CPUs and {free_gpus:g} GPUs free now (the rest "
                     f"is in use): replicas that do not fit wait for them, at most {load_timeout:.0f} s "
                     f"or until the deadline; the run goes on with those that load")
    # A greedy answer must not depend on which replica solved it, nor on what its slots held before:
    # prompt reuse per slot is bitwise only when it is off (see --cache-prompts), so it is off unless asked.
    cache = config.cache_prompts
    if cache is None:
        cache = False
        notes.append("--ray: --cache-prompts is off unless asked for, so an answer does not depend on "
                     "which replica solved it")
    where = "a local Ray cluster" if config.ray == "local" else f"the Ray cluster at {config.ray}"
    what = f"{per:g} GPU" if per else f"{threads} CPU thread{'s' if threads > 1 else ''}"
    notes.append(f"{replicas} replicas on {where}, {what} each")
    return ReplicaPlan(replicas=replicas, gpus_each=per, cpus_each=cpus_each, threads=threads, cache_prompts=cache,
                       notes=tuple(notes))
