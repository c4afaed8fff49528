"""Replicas: one model loaded by several engines, on several GPUs or machines, one run.

``aimo-gguf run problems.csv --ray [ADDRESS] --replicas N`` solves a problem set
on N replicas, each an engine and the usual ``Solver`` (``actor.Replica``, a Ray
actor), handed whole problems as they free up by the driver
(``dispatch.Dispatcher``), which streams each decided problem back into the
runner's one journal, submission, summary and traces. The driver sees a replica
only through the replica-handle protocol (``handle``), so a replica could as well
be a thread or a local child process; ``on_ray`` implements it over Ray actors,
``plan`` decides how many replicas fit a cluster, and ``cluster`` is the one
module that imports Ray (an extra: ``pip install 'aimo-gguf[ray]'``; nothing
here imports it before a run asks).
"""

from __future__ import annotations

from .cluster import require_ray
from .on_ray import RayReplicas

__all__ = ["RayReplicas", "require_ray"]
