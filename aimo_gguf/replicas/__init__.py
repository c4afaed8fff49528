"""Replicas on Ray: one model loaded by several engines, on several GPUs or machines, one run.

``aimo-gguf run problems.csv --ray [ADDRESS] --replicas N`` solves a problem set
on N replicas (``actor.Replica``: a Ray actor holding one engine and running the
usual ``Solver``), handed whole problems as they free up by the driver
(``dispatch.RayReplicas``), which streams each decided problem back into the
runner's one journal, submission, summary and traces. Ray is an extra:
``pip install 'aimo-gguf[ray]'``; nothing here imports it before a run asks.
"""

from __future__ import annotations

from .dispatch import RayReplicas, require_ray

__all__ = ["RayReplicas", "require_ray"]
