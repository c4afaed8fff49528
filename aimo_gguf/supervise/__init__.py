"""The engine in a supervised child process: a native crash costs the problems in flight, not the run.

llama.cpp aborting on a ``GGML_ASSERT``, a CUDA error, an illegal
instruction or a segfault kills the process that holds the engine. So
``aimo-gguf run`` (``source.SupervisedSource``) and the AIMO3 adapter
(``served.ServedEngine``) keep the engine, the Solver and the tool sandboxes
in a child process (``child``), driven through the replica-handle protocol
(``replicas.handle``; ``handle.ProcessHandle``), and keep in this process what
must survive: the journal, the outputs, the signals, the clock, the progress.
Only problems and their results cross between the two, never tokens.
``faults`` is the tests' hook for real native deaths at chosen points.

Nothing is imported here: ``python -m aimo_gguf.supervise.child`` must find
its module not yet loaded.
"""
