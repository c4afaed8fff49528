"""``aimo-gguf compare``: how much a quantization changes a model.

Over a text, both models read the same tokens in chunks of ``ctx``; at every
position the quantized model's next-token distribution Q is compared with the
reference's P: top-1 agreement (same most likely token), mean and 99th
percentile of KL(P || Q), and each model's perplexity. The reference is run
first and its log-probabilities are kept in a temporary file, so only one
model is in memory at a time.

Over a problem set, both models solve it with the same options and seed:
accuracy (when the set has answers) and generated tokens per second.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .config import CHECK_BATCH_SIZE
from .errors import InputError

DEFAULT_CTX = 512
DEFAULT_TEXT = "compare_text.md"


@dataclass
class TextComparison:
    """Next-token agreement of the quantized model with the reference over a text."""

    text: str  # the file, or "bundled math text"
    tokens: int  # positions compared
    chunks: int
    top1_agreement: float  # share of positions whose most likely token is the same
    mean_kl: float  # mean KL(reference || quantized), nats
    p99_kl: float
    max_kl: float
    reference_perplexity: float
    quantized_perplexity: float


@dataclass
class ProblemScore:
    """One model on the problem set."""

    model: str
    graded: int
    correct: int
    generated_tokens: int
    run_seconds: float
    tokens_per_second: float

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None


@dataclass
class Comparison:
    reference: str
    quantized: str
    text: TextComparison | None
    problems: tuple[ProblemScore, ProblemScore] | None

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.problems:
            for entry, score in zip(d["problems"], self.problems):
                entry["accuracy"] = score.accuracy
        return d

    def table(self) -> str:
        rows = [("reference", self.reference), ("quantized", self.quantized)]
        if self.text:
            t = self.text
            rows += [
                ("text", f"{t.text}: {t.tokens} positions in {t.chunks} chunk(s)"),
                ("top-1 agreement", f"{t.top1_agreement:.2%}"),
                ("KL divergence", f"mean {t.mean_kl:.5f}, p99 {t.p99_kl:.5f}, max {t.max_kl:.4f} nats"),
                ("perplexity", f"reference {t.reference_perplexity:.3f}, quantized {t.quantized_perplexity:.3f}"),
            ]
        if self.problems:
            for label, s in zip(("reference", "quantized"), self.problems):
                acc = f"{s.correct}/{s.graded} = {s.accuracy:.1%}" if s.graded else "no answers to grade"
                rows.append((f"{label} on problems", f"{acc}, {s.tokens_per_second:.1f} generated tokens/s"))
            ref, q = self.problems
            if ref.tokens_per_second:
                rows.append(("speed ratio", f"quantized {q.tokens_per_second / ref.tokens_per_second:.2f}x the reference"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def compare(
    reference: str | Path,
    quantized: str | Path,
    *,
    text: str | Path | None = None,
    problems: str | Path | None = None,
    ctx: int = DEFAULT_CTX,
    max_text_tokens: int | None = None,
    n_gpu_layers: int | str = 0,
    threads: int | None = None,
    samples: int = 4,
    max_tokens: int = 1024,
    batch_size: int = CHECK_BATCH_SIZE,
    seed: int = 0,
    progress: bool = True,
) -> Comparison:
    """Compare ``quantized`` with ``reference`` over a text (default: a bundled math
    text, ``aimo_gguf/data/compare_text.md``) and, when ``problems`` is given, on
    that problem set."""
    from .config import make_config
    from .engine.limits import check_threads
    from .gguf.files import resolve_model
    from .pipeline.problems import read_problems

    ref_path, q_path = resolve_model(str(reference)), resolve_model(str(quantized))
    if ctx < 16:
        raise InputError(f"--ctx must be at least 16, got {ctx}")
    check_threads(threads)
    _check_vocabularies(ref_path, q_path)
    label, body = _read_text(text)
    if problems is not None:  # every input is checked before the first model loads, not after the text
        problems = read_problems(problems)
        make_config(n_gpu_layers=n_gpu_layers, threads=threads, samples=samples, max_tokens=max_tokens,
                    batch_size=batch_size, seed=seed)
    text_result = _compare_text(ref_path, q_path, body, label, ctx=ctx, max_tokens=max_text_tokens,
                                n_gpu_layers=n_gpu_layers, threads=threads, progress=progress)
    scores = None
    if problems is not None:
        scores = tuple(
            _score_problems(path, problems, n_gpu_layers=n_gpu_layers, threads=threads, samples=samples,
                            max_tokens=max_tokens, batch_size=batch_size, seed=seed, progress=progress)
            for path in (ref_path, q_path)
        )
    return Comparison(str(ref_path), str(q_path), text_result, scores)


def _check_vocabularies(ref_path: Path, q_path: Path) -> None:
    """Refuse, from the headers alone, two models that cannot share a tokenizer."""
    from .fit.memory import read_shape

    a, b = read_shape(str(ref_path)), read_shape(str(q_path))
    if a.n_vocab != b.n_vocab or a.architecture != b.architecture:
        raise InputError("the two models do not share a tokenizer: compare quantizations of one model")


def _read_text(text: str | Path | None) -> tuple[str, str]:
    if text is None:
        from importlib.resources import files

        return "bundled math text", files("aimo_gguf").joinpath("data", DEFAULT_TEXT).read_text(encoding="utf-8")
    path = Path(text)
    try:
        body = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read it as UTF-8 text ({e})") from None
    if not body.strip():
        raise InputError(f"{path} is empty")
    return str(path), body


def _gpu_layers(path: Path, *, n_gpu_layers: int | str, ctx: int, threads: int | None, say) -> int:
    """``n_gpu_layers`` for one model, 'auto' resolved by the load plan as ``run`` resolves it (each model
    apart: the reference is usually the larger)."""
    if n_gpu_layers != "auto":
        return n_gpu_layers
    from .config import make_config
    from .fit.plan import plan_load

    plan = plan_load(make_config(n_gpu_layers="auto", ctx=ctx, batch_size=1, threads=threads), path)
    for note in plan.notes:
        say(note)
    return plan.n_gpu_layers


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _compare_text(ref_path: Path, q_path: Path, body: str, label: str, *, ctx: int, max_tokens: int | None,
                  n_gpu_layers: int | str, threads: int | None, progress: bool) -> TextComparison:
    from .engine import Engine

    say = (lambda m: print(f"aimo-gguf: {m}", file=sys.stderr)) if progress else (lambda m: None)

    def engine(path: Path) -> Engine:
        layers = _gpu_layers(path, n_gpu_layers=n_gpu_layers, ctx=ctx, threads=threads, say=say)
        return Engine(path, n_gpu_layers=layers, ctx=ctx, batch_size=1, threads=threads,
                      token_budget=min(ctx, 512), max_outputs=min(ctx, 512))

    with tempfile.TemporaryDirectory(prefix="aimo-gguf-compare-") as tmp:
        t0 = time.perf_counter()
        with engine(ref_path) as ref:
            tokens = ref.tokenize(body, add_special=False, parse_special=False)
            probe = ref.tokenize(body[:2000], add_special=False, parse_special=False)
            bos = ref.tokenize("", add_special=True)  # [BOS] for models that want one, else []
            if max_tokens:
                tokens = tokens[:max_tokens]
            step = ctx - len(bos)
            chunks = [bos + tokens[i:i + step] for i in range(0, len(tokens), step)]
            chunks = [c for c in chunks if len(c) >= 2]
            if not chunks:
                raise InputError(f"{label} is too short to compare on: it needs at least 2 tokens")
            n_vocab = ref.n_vocab
            positions = sum(len(c) - 1 for c in chunks)
            need = positions * n_vocab * 4
            if shutil.disk_usage(tmp).free < need * 1.05:
                raise InputError(f"the reference log-probabilities need {need / 2**20:,.0f} MiB in {tmp}: "
                                 f"free space there (TMPDIR) or pass --max-text-tokens")
            store = np.lib.format.open_memmap(Path(tmp) / "ref.npy", mode="w+", dtype=np.float32,
                                              shape=(positions, n_vocab))
            at = 0
            say(f"reference: {positions} positions in {len(chunks)} chunk(s)...")
            for chunk in chunks:
                logp = _log_softmax(ref.logits(chunk)[:-1])
                store[at:at + len(logp)] = logp
                at += len(logp)
        with engine(q_path) as q:
            if q.n_vocab != n_vocab or q.tokenize(body[:2000], add_special=False, parse_special=False) != probe:
                raise InputError("the two models do not share a tokenizer: compare quantizations of one model")
            say("quantized model...")
            kl = np.empty(positions, dtype=np.float64)
            agree = np.empty(positions, dtype=bool)
            nll_ref = np.empty(positions, dtype=np.float64)
            nll_q = np.empty(positions, dtype=np.float64)
            at = 0
            for chunk in chunks:
                logq = _log_softmax(q.logits(chunk)[:-1])
                logp = np.asarray(store[at:at + len(logq)])
                n = len(logq)
                nxt = np.asarray(chunk[1:])
                kl[at:at + n] = (np.exp(logp) * (logp - logq)).sum(axis=1)
                agree[at:at + n] = logp.argmax(axis=1) == logq.argmax(axis=1)
                nll_ref[at:at + n] = -logp[np.arange(n), nxt]
                nll_q[at:at + n] = -logq[np.arange(n), nxt]
                at += n
        del store
        say(f"compared in {time.perf_counter() - t0:.1f} s")
    kl = np.maximum(kl, 0.0)  # rounding can give -1e-9
    return TextComparison(
        text=label,
        tokens=positions,
        chunks=len(chunks),
        top1_agreement=float(agree.mean()),
        mean_kl=float(kl.mean()),
        p99_kl=float(np.percentile(kl, 99)),
        max_kl=float(kl.max()),
        reference_perplexity=float(np.exp(nll_ref.mean())),
        quantized_perplexity=float(np.exp(nll_q.mean())),
    )


def _score_problems(model: Path, problems, *, n_gpu_layers, threads, samples, max_tokens, batch_size, seed,
                    progress) -> ProblemScore:
    from .pipeline.runner import run

    result = run(problems, output=None, progress=progress, model=str(model), n_gpu_layers=n_gpu_layers,
                 threads=threads, samples=samples, max_tokens=max_tokens, batch_size=batch_size, seed=seed)
    s = result.summary
    return ProblemScore(model=str(model), graded=s.graded, correct=s.correct, generated_tokens=s.generated_tokens,
                        run_seconds=s.run_seconds, tokens_per_second=s.tokens_per_second)
