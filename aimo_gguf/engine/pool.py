"""Several engines in one process as one ``BatchEngine``: one problem's samples over several GPUs, one vote.

The Kaggle gateway hands the adapter one problem at a time, so whole problems
cannot be spread over GPUs; its samples can. ``EnginePool`` runs each engine's
``generate`` on a thread of its own (llama.cpp releases the GIL inside
``llama_decode``, so the GPUs decode at once) and feeds them all from the one
lazy request stream of the caller's ``Solver``: a request goes to whichever
engine asks for one. Completions come back on the caller's thread, where the
Solver votes; a cancelled request is the same object on every side, so
stopping a decided problem stops its samples on every engine at their next
step. No process, no RPC: threads and queues.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace

from .api import BatchEngine, Completion, EngineStats, LoadInfo, Request

POLL_SECONDS = 0.01  # how often the caller's on_step runs while every engine is busy decoding
_WANT, _DONE, _END = "want", "done", "end"


class EnginePool(BatchEngine):
    """``engines`` behind one BatchEngine: a batch as large as theirs together, the first one's tokenizer."""

    def __init__(self, engines: Sequence[BatchEngine]) -> None:
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        self.engines = list(engines)
        first = self.engines[0]
        self.batch_size = sum(e.batch_size for e in self.engines)
        self.n_ctx_seq = min(e.n_ctx_seq for e in self.engines)
        self.info: LoadInfo = replace(first.info, n_seq_max=self.batch_size,
                                      load_seconds=sum(e.info.load_seconds for e in self.engines))
    @property
    def stats(self) -> EngineStats:
        """The engines' counters, summed: a new snapshot each time (the engines' threads go on counting)."""
        return EngineStats.merged(e.stats for e in self.engines)

    @property
    def chat_template(self) -> str | None:
        return self.engines[0].chat_template

    @property
    def bos_token(self) -> str:
        return self.engines[0].bos_token

    @property
    def eos_token(self) -> str:
        return self.engines[0].eos_token

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.engines[0].tokenize(text, add_special=add_special, parse_special=parse_special)

    def close(self) -> None:
        for e in self.engines:
            e.close()

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(self, requests: Iterable[Request], *, on_step: Callable[[], None] | None = None
                 ) -> Iterator[Completion]:
        """Every engine decodes on its own thread, pulling from ``requests`` (through this thread, the only
        one that touches the caller's iterator) whenever it has a free slot."""
        source = iter(requests)
        events: queue.Queue = queue.Queue()
        replies = [queue.Queue() for _ in self.engines]
        issued: list[Request] = []
        stopping = threading.Event()

        def feed(i: int) -> Iterator[Request]:
            while not stopping.is_set():
                events.put((_WANT, i, None))
                request = replies[i].get()
                if request is None:
                    return
                yield request

        def work(i: int, engine: BatchEngine) -> None:
            error = None
            try:
                for completion in engine.generate(feed(i)):
                    events.put((_DONE, i, completion))
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                error = e
            events.put((_END, i, error))

        threads = [threading.Thread(target=work, args=(i, e), name=f"aimo-gguf-engine-{i}", daemon=True)
                   for i, e in enumerate(self.engines)]
        for t in threads:
            t.start()
        running, exhausted = len(threads), False
        step = on_step or (lambda: None)
        try:
            while running:
                try:
                    kind, i, payload = events.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    step()
                    continue
                if kind == _WANT:
                    request = None if exhausted or stopping.is_set() else next(source, None)
                    exhausted = exhausted or request is None
                    if request is not None:
                        issued.append(request)
                    replies[i].put(request)
                elif kind == _DONE:
                    yield payload
                    step()
                else:
                    running -= 1
                    if payload is not None:
                        raise payload
        finally:
            stopping.set()
            if running:  # stopped early (the caller closed us, an error, Ctrl-C): every engine ends what it runs
                for request in issued:
                    request.cancelled = True
            for r in replies:
                r.put(None)
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.1)
                    while not events.empty():  # a thread blocked on nothing: drain what it put
                        events.get_nowait()
