"""Stand-ins shared by the test tiers: a fake engine that declares the real one's interface, a fake clock.

``FakeEngine`` declares ``aimo_gguf.engine.BatchEngine``, the Protocol the solver
drives and the real ``Engine`` declares too; ``tests/cli/test_engine_contract.py``
runs the same contract test against both. Its ``generate`` simulates continuous
batching step by step: up to ``batch_size`` requests are active, pulled lazily
from the caller's iterable when a slot is free; a cancelled request ends at the
next step; each active request advances one step per step and finishes after
``steps(problem, sample)`` of them (or one per token with ``steps="tokens"``) with ``reply(problem, sample)`` as its text
(cut to ``max_tokens`` characters, one token each, and then ``length``).
With ``confidence(problem, sample)`` each completion carries those aggregates,
and a request whose ``stop_below`` is above its lowest group confidence is cut
at its next step as ``low_confidence``, as the real engine cuts it.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

import numpy as np

from aimo_gguf.engine import (
    FINISH_CANCELLED,
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_LOW_CONFIDENCE,
    FINISH_TOO_LONG,
    BatchEngine,
    Completion,
    EngineStats,
    LoadInfo,
    Request,
)
from aimo_gguf.engine.confidence import Confidence
from aimo_gguf.pipeline.problems import Problem
from aimo_gguf.utf8 import utf8

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)

Reply = Callable[[int, int], str]
HARMONY_SPECIALS = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|call|>", "<|return|>", "<|constrain|>")
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(t) for t in HARMONY_SPECIALS) + ")")


def boxed(answer: int | None) -> str:
    return "I do not know." if answer is None else f"So the answer is \\boxed{{{answer}}}."


def conf(entropy: float = 1.0, *, group: float = 5.0, tail: float | None = None, tokens: int = 10) -> Confidence:
    """Confidence aggregates for a fake sample: ``entropy`` (mean), ``group`` (lowest group confidence)."""
    return Confidence(tokens=tokens, mean_entropy=entropy, mean_confidence=group, mean_logprob=-entropy,
                      lowest_group_confidence=group, tail_entropy=entropy if tail is None else tail,
                      tail_confidence=group)


def problems_of(n: int, *, answers: list[int | None] | None = None) -> list[Problem]:
    answers = answers if answers is not None else [None] * n
    return [Problem(id=f"p{i}", problem=f"What is {i} + 1?", answer=answers[i]) for i in range(n)]


def fake_info(*, batch_size: int = 1, n_ctx_seq: int = 4096, n_gpu_layers_requested: int = 0,
              confidence: bool = False) -> LoadInfo:
    return LoadInfo(model_path="fake.gguf", description="fake 0B Q0", n_layers=2, n_params=0, size_bytes=0,
                    n_gpu_layers_requested=n_gpu_layers_requested, n_gpu_layers=0, gpu_offload_supported=False,
                    n_ctx_seq=n_ctx_seq, n_seq_max=batch_size, kv_unified=False, kv_type="f16",
                    share_prompts=False, cache_prompts=False, threads=1, notes=(), load_seconds=0.0,
                    confidence=confidence)


class FakeEngine(BatchEngine):
    """Canned replies, continuous batching of ``batch_size``, ``steps`` steps per sample."""

    def __init__(
        self,
        reply: Reply,
        *,
        batch_size: int = 1,
        n_ctx_seq: int = 4096,
        chat_template: str | None = TEMPLATE,
        steps: Callable[[int, int], int] | str | None = None,  # steps a sample takes; default 1;
        # "tokens": one step per character of its reply, at most max_tokens, as the real engine does
        n_gpu_layers_requested: int = 0,
        confidence: Callable[[int, int], Confidence] | None = None,
        architecture: str = "",  # "gpt-oss": harmony's special tokens are one token each, as in its vocabulary
        name: str = "",
        step_seconds: float = 0.0,  # real time each step takes (threads racing a real engine's pace)
    ) -> None:
        self.step_seconds = step_seconds
        self.reply = reply
        self.specials = {t: 0x110000 + i for i, t in enumerate(HARMONY_SPECIALS)} if architecture == "gpt-oss" \
            else {}
        self.confidence = confidence
        self.batch_size = batch_size
        self.n_ctx_seq = n_ctx_seq
        self._chat_template = chat_template
        self.per_token = steps == "tokens"
        self.steps_of = (lambda p, s: 1) if steps is None or self.per_token else steps
        self.pulled: list[Request] = []  # every request taken from the caller's iterable
        self.finished: list[Completion] = []
        self.max_active = 0
        self.steps = 0
        self.closed = False
        self.stats = EngineStats()
        self.info = replace(fake_info(batch_size=batch_size, n_ctx_seq=n_ctx_seq,
                                      n_gpu_layers_requested=n_gpu_layers_requested,
                                      confidence=confidence is not None), architecture=architecture, name=name)

    @property
    def chat_template(self) -> str | None:
        return self._chat_template

    @property
    def bos_token(self) -> str:
        return "<s>"

    @property
    def eos_token(self) -> str:
        return "</s>"

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        text = utf8(text).decode()  # as the real engine reads text UTF-8 cannot encode: U+FFFD
        if parse_special and self.specials:
            tokens = []
            for part in _SPECIAL_RE.split(text):
                tokens += [self.specials[part]] if part in self.specials else [ord(c) for c in part]
            return tokens
        return [ord(c) for c in text]  # one token per character: prompt lengths are easy to control

    def pulled_for(self, problem_index: int) -> list[Request]:
        return [r for r in self.pulled if r.key[0] == problem_index]

    def _key(self, request: Request) -> tuple[int, int]:
        key = request.key
        return key if isinstance(key, tuple) and len(key) == 2 else (0, 0)

    def _done(self, request: Request, text: str, reason: str) -> Completion:
        confidence = None
        if self.confidence is not None and reason not in (FINISH_CANCELLED, FINISH_TOO_LONG):
            confidence = self.confidence(*self._key(request))
        completion = Completion(request, text, list(range(len(text))), reason, confidence)
        self.stats.finish_reasons[reason] += 1
        self.stats.generated_tokens += len(text)
        self.finished.append(completion)
        return completion

    def _below(self, request: Request) -> bool:
        if request.stop_below is None or self.confidence is None:
            return False
        return self.confidence(*self._key(request)).lowest_group_confidence < request.stop_below

    def _finish(self, request: Request) -> Completion:
        text = self.reply(*self._key(request))
        if request.tool is not None:
            text = self._run_tool(request.tool, text)
        if len(text) > request.max_tokens:
            return self._done(request, text[: request.max_tokens], FINISH_LENGTH)
        return self._done(request, text, FINISH_EOS)

    def _run_tool(self, tool, text: str) -> str:
        """What the engine does with a reply that closes a code block (or, harmony's, that has a
        <|call|> token): pause, run, inject the output (a reply's parts joined)."""
        import time

        call = self.specials.get("<|call|>")
        if call is not None and "<|call|>" in text:
            end = text.index("<|call|>") + len("<|call|>")
            token, piece = call, b"<|call|>"
        else:
            start = text.find("```python")
            end = text.find("```", start + 9) + 3 if start >= 0 else -1
            token, piece = -1, b"```"
        if end < 3 or not tool.wants_call(bytearray(text[:end].encode()), piece, token, room=10**6,
                                          eog=token == call):
            return text
        tool.start(text[:end])
        deadline = time.monotonic() + 30
        output = tool.poll()
        while output is None and time.monotonic() < deadline:
            time.sleep(0.005)
            output = tool.poll()
        if output is not None and not isinstance(output, str):
            output = "".join(part for part, _ in output)
        rest = text[end:]
        if token == call and output is not None:
            rest = self._run_tool(tool, rest)  # harmony samples may call again after the reply
        return text[:end] + (output or "") + rest

    def generate(self, requests: Iterable[Request], *, on_step: Callable[[], None] | None = None
                 ) -> Iterator[Completion]:
        source = iter(requests)
        active: deque[list] = deque()  # [request, steps left]
        exhausted = False
        while True:
            finished: list[Completion] = []
            for entry in list(active):  # like the real engine: cancelled sequences end first
                if entry[0].cancelled:
                    active.remove(entry)
                    finished.append(self._done(entry[0], "", FINISH_CANCELLED))

            while len(active) < self.batch_size and not exhausted:  # admission, lazily
                request = next(source, None)
                if request is None:
                    exhausted = True
                    break
                self.pulled.append(request)
                if request.cancelled:
                    finished.append(self._done(request, "", FINISH_CANCELLED))
                elif len(request.prompt) == 0 or len(request.prompt) >= self.n_ctx_seq:
                    finished.append(self._done(request, "", FINISH_TOO_LONG))
                else:
                    self.stats.prompt_tokens += len(request.prompt)
                    if self.per_token:
                        n = min(len(self.reply(*self._key(request))), request.max_tokens)
                    else:
                        n = self.steps_of(*self._key(request))
                    active.append([request, max(1, n)])
            self.max_active = max(self.max_active, len(active))
            yield from finished
            if not active:
                if exhausted:
                    return
                continue
            self.steps += 1
            self.stats.steps += 1
            if self.step_seconds:
                time.sleep(self.step_seconds)
            done = []
            for entry in list(active):
                if self._below(entry[0]):  # its window fell below the threshold during this step
                    active.remove(entry)
                    done.append(self._done(entry[0], "cut", FINISH_LOW_CONFIDENCE))
                    continue
                entry[1] -= 1
                if entry[1] == 0:
                    active.remove(entry)
                    done.append(self._finish(entry[0]))
            yield from done
            if on_step is not None:
                on_step()


class Clock:
    """A fake monotonic clock: tests move it; the solver and the adapter read it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TimedEngine(FakeEngine):
    """A FakeEngine whose every step takes ``step`` seconds of the fake clock."""

    def __init__(self, reply, clock: Clock, step: float, **kw) -> None:
        super().__init__(reply, **kw)
        self.clock = clock
        self.step = step

    def generate(self, requests, *, on_step=None):
        def tick():
            self.clock.now += self.step
            if on_step is not None:
                on_step()

        yield from super().generate(requests, on_step=tick)


class PromptEngine(FakeEngine):
    """A fake engine that answers ``What is N + 1?`` from the prompt itself (N + 1), whatever the problem's
    position: an engine process restarted mid-run sees the problems left at new positions. With ``tir`` each
    reply runs ``print(N + 1)`` in a fenced block first (a real sandbox worker per sample)."""

    def __init__(self, *, tir: bool = False, **kwargs) -> None:
        super().__init__(self._reply_to_prompt, **kwargs)
        self.tir = tir
        self._request: Request | None = None

    def _finish(self, request: Request) -> Completion:
        self._request = request
        return super()._finish(request)

    def _reply_to_prompt(self, problem: int, sample: int) -> str:
        text = "".join(map(chr, self._request.prompt))
        n = int(re.findall(r"What is (\d+) \+ 1\?", text)[-1]) + 1
        return (f"```python\nprint({n})\n```\n" if self.tir else "") + boxed(n)


def load_prompt_engine(config, model_path, **kwargs) -> PromptEngine:
    """The engine process's loader in the cli tier (``AIMO_GGUF_CHILD_LOADER=fakes:load_prompt_engine``):
    three steps of 5 ms per sample, so several problems are in flight at once, as on a real engine."""
    import os

    batch = config.batch_size if isinstance(config.batch_size, int) else 4
    engine = PromptEngine(tir=config.tir, batch_size=batch, n_ctx_seq=config.sequence_ctx, steps=lambda p, s: 3,
                          step_seconds=0.005)
    # FAKE_ENGINE_MB: memory the engine holds, as a model's weights would (written, so it is resident)
    engine.weights = np.ones(int(os.environ.get("FAKE_ENGINE_MB", "0")) << 20, dtype=np.uint8)
    return engine


def load_boxed_engine(config, model_path, **kwargs) -> FakeEngine:
    """The engine process's loader for the notebook under the gateway (``tests/notebook_run.py --fake-answer``):
    every sample answers ``$FAKE_ANSWER``, one step each."""
    import os

    answer = int(os.environ["FAKE_ANSWER"])
    batch = config.batch_size if isinstance(config.batch_size, int) else 1
    return FakeEngine(lambda problem, sample: boxed(answer), batch_size=batch, n_ctx_seq=config.sequence_ctx)
