"""Every option of ``aimo-gguf run``, declared once.

Each field of ``RunConfig`` is one CLI flag (``n_gpu_layers`` is
``--n-gpu-layers``, and ``AIMO_GGUF_N_GPU_LAYERS`` in the environment); its
default and its help text live here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from .engine.api import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CTX,
    DEFAULT_SPLIT_MODE,
    FLASH_ATTN_MODES,
    KV_TYPES,
    PROMPT_ALLOWANCE,
    SAMPLER_AUTO,
    SAMPLER_PATHS,
    SPLIT_MODES,
    check_choices,
)
from .engine.confidence import (
    DEFAULT_GROUP_WINDOW,
    DEFAULT_TAIL_WINDOW,
    DEFAULT_TOP_K,
    ConfidenceSettings,
)
from .engine.limits import MAX_THREADS, check_batch_size, check_threads
from .errors import InputError
from .fit.memory import parse_size
from .fit.shares import parse_tensor_split
from .recipes import RECIPES
from .solving.voting import DEFAULT_VOTE_FLOOR, VOTE_MODES
from .styles.answers import DEFAULT_MAX_ANSWER, DEFAULT_MIN_ANSWER
from .styles.harmony import REASONING_EFFORTS
from .styles.prompts import DEFAULT_SYSTEM_PROMPT, PROMPT_STYLES

DEFAULT_SAMPLES = 4
DEFAULT_MAX_TOKENS = 1024
DEFAULT_TEMPERATURE = 0.7
DEFAULT_FALLBACK_ANSWER = 0
# -b of models and compare, which size or compare models rather than run a competition: 8 since both
# were written (models' README table is for 8 sequences), apart from run's DEFAULT_BATCH_SIZE.
CHECK_BATCH_SIZE = 8
ENV_PREFIX = "AIMO_GGUF_"


def _opt(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass(kw_only=True)
class RunConfig:
    """Settings of one run; see each field's help."""

    model: str | None = _opt(None, "GGUF model file, or the first part of a split one (NAME-00001-of-0000N.gguf) "
                                   "[default: the embedded SmolLM2-135M-Instruct Q4_1].")
    recipe: str | None = _opt(None, "A named bundle of settings (aimo-gguf recipes lists them, with their "
                                    "sources); every flag given still overrides it.", choices=tuple(RECIPES))
    n_gpu_layers: int | str = _opt(
        0, "Layers to offload to the GPU (-1 = all), or 'auto': the most that fit the GPU's free memory "
           "(or --max-memory) with this batch and context. Falls back to fewer, then to CPU.", accepts_auto=True)
    threads: int | None = _opt(None, f"CPU threads, at most {MAX_THREADS} [default: physical cores].")
    ctx: int = _opt(
        DEFAULT_CTX,
        f"Context of one sequence in tokens, prompt included [default: {PROMPT_ALLOWANCE} + --max-tokens].",
    )
    batch_size: int | str = _opt(
        DEFAULT_BATCH_SIZE,
        "Sequences decoded together in one llama_decode, or 'auto': the largest that fits --max-memory.",
        accepts_auto=True,
    )
    max_memory: str | None = _opt(
        None, "Memory budget for --batch-size auto and -ngl auto, e.g. 16GiB [CPU: 80% of available RAM; "
              "GPU: its free memory through NVML (nvidia-ml-py), else required]."
    )
    samples: int = _opt(DEFAULT_SAMPLES, "Samples per problem, voted on (--vote).")
    max_tokens: int = _opt(DEFAULT_MAX_TOKENS, "Most tokens generated per sample.")
    temperature: float = _opt(DEFAULT_TEMPERATURE, "Sampling temperature (0 = greedy).")
    top_k: int = _opt(40, "Top-k sampling (0 = off).")
    top_p: float = _opt(0.95, "Top-p (nucleus) sampling (1 = off).")
    min_p: float = _opt(0.05, "Min-p sampling (0 = off).")
    seed: int = _opt(0, "Base seed; each sample's seed derives from it, the problem id and the sample number.")
    system_prompt: str = _opt(DEFAULT_SYSTEM_PROMPT, "System prompt (asks for the answer in \\boxed{}).")
    raw_prompt: bool = _opt(False, "Plain 'Problem: ... Solution:' prompt instead of the chat template (base models).")
    prompt_style: str = _opt(
        "auto", "Prompt family: harmony (gpt-oss: channels, reasoning effort, its python tool), think (a <think> "
                "block first, the instruction in the user turn, no system prompt), plain (system prompt and "
                "problem), or auto: from the GGUF's architecture, chat template and name.", choices=PROMPT_STYLES)
    reasoning_effort: str = _opt("high", "gpt-oss's reasoning effort (harmony prompts).", choices=REASONING_EFFORTS)
    think_reserve: int = _opt(0, "Tokens kept for the answer with think prompts: a sample still thinking this "
                                 "close to --max-tokens has its thinking closed for it [default: an eighth of "
                                 "--max-tokens, at most 512].")
    stop: tuple[str, ...] = _opt((), "Stop string ending a sample (repeatable).", multiple=True)
    ignore_eos: bool = _opt(False, "Never stop at end-of-sequence (benchmarks: every sample runs --max-tokens).")
    early_stop: bool = _opt(True, "Stop a problem's sampling once no pending sample can change its winner.")
    early_stop_votes: int = _opt(0, "Also stop a problem's sampling once its leading answer has N votes (0 = off).")
    early_stop_lead: int = _opt(0, "Also stop a problem's sampling once its leading answer is N votes ahead of "
                                   "the next (0 = off).")
    stop_unanswered: int = _opt(0, "Stop a problem's sampling once N of its samples ended without an answer "
                                   "(0 = off).")
    vote: str = _opt("majority", "How samples vote: majority, entropy (1 / max(mean top-k entropy, "
                                 "--vote-floor)), tail (the same over a sample's last --tail-window tokens) "
                                 "or deepconf (its lowest group confidence).", choices=VOTE_MODES)
    vote_floor: float = _opt(DEFAULT_VOTE_FLOOR, "Entropy floor of --vote entropy and tail: one vote weighs "
                                                 "at most 1 / floor.")
    keep_top: float = _opt(100.0, "Only the most confident PCT percent of a problem's answered samples vote "
                                  "(DeepConf's filtering; 100 = all).")
    stop_below: float | None = _opt(
        None, "Early termination (DeepConf online): once --stop-warmup samples of a problem finished, cut a "
              "later sample as soon as its group confidence falls below this percentile of theirs (10: mild, "
              "90: DeepConf-low); a cut sample does not vote.")
    stop_warmup: int = _opt(4, "Finished samples of a problem that set --stop-below's threshold.")
    problem_time_cap: float | None = _opt(
        None, "Most seconds one problem may take, on top of --time-limit's shares; what it leaves stays "
              "for the problems after it.")
    confidence: bool | None = _opt(
        None, "Compute each token's confidence from its logits [default: when --vote, --keep-top or "
              "--stop-below need it, when the problems have answers (every vote mode's accuracy is "
              "reported), or with --traces].")
    confidence_top_k: int = _opt(DEFAULT_TOP_K, "Top log-probabilities per token for entropy and confidence.")
    group_window: int = _opt(0, "Tokens per sliding window of the group confidence (--vote deepconf, "
                                f"--stop-below) [default: a quarter of --max-tokens, 16 to {DEFAULT_GROUP_WINDOW}].")
    tail_window: int = _opt(0, "Tokens before a sample's end that --vote tail averages "
                               f"[default: a quarter of --max-tokens, 16 to {DEFAULT_TAIL_WINDOW}].")
    time_limit: float | None = _opt(
        None, "Seconds for the whole run, model load included: every problem gets a share of the time left, "
              "and the submission is written before the limit.")
    time_margin: float = _opt(0.0, "Seconds kept back from --time-limit for writing the results "
                                   "[default: 1% of the limit, 2 to 60 s, at most a tenth of it].")
    min_answer: int = _opt(DEFAULT_MIN_ANSWER, "Smallest valid answer.")
    max_answer: int = _opt(DEFAULT_MAX_ANSWER, "Largest valid answer.")
    modulo: int | None = _opt(None, "Reduce answers modulo this before the range check.")
    fallback_answer: int = _opt(DEFAULT_FALLBACK_ANSWER, "Answer written when a problem has no valid answer.")
    tir: bool = _opt(False, "Tool-integrated reasoning: run the Python blocks a sample writes, in a sandbox, "
                            "and feed their output back into the sample.")
    max_tool_calls: int = _opt(4, "Most code blocks run per sample with --tir.")
    tool_timeout: float = _opt(10.0, "Wall-clock seconds per code block with --tir.")
    tool_output_chars: int = _opt(1000, "Characters of a code block's output fed back (head and tail kept).")
    tir_weight: float = _opt(1.0, "Vote weight of a --tir sample whose code all ran without error "
                                  "(1 = plain majority).")
    kv_unified: bool = _opt(False, "One KV buffer shared by all sequences (slower at large batch on CPU).")
    share_prompts: bool | None = _opt(
        None, "Samples of a problem copy its prompt's KV cache instead of decoding it [default: with --kv-unified]."
    )
    cache_prompts: bool | None = _opt(
        None, "A slot keeps its prompt's KV cache for the next sample that starts the same way, which then "
              "decodes only the rest (the chat template's start, or all but one token of the same problem) "
              "[default: on, but with --kv-unified]. Off: a sample's tokens depend on its seed alone, "
              "not on what ran in its slot before (bitwise)."
    )
    flash_attn: str = _opt("auto", "Flash attention: " + ", ".join(FLASH_ATTN_MODES) + ".", choices=FLASH_ATTN_MODES)
    kv_type: str = _opt("f16", "KV cache element type (the quantized ones need flash attention).", choices=KV_TYPES)
    repack: bool = _opt(True, "The CPU backend's extra buffer types: weights repacked for its faster kernels, and "
                              "AMX where built. --no-repack (llama.cpp's name) keeps weights as stored; it is "
                              "also what a run does, with a note, where the probe finds they die on this CPU.")
    sampler: str = _opt(SAMPLER_AUTO, "Where tokens are drawn: batched (every sequence of a step at once, on "
                                      "the CPU), chain (llama.cpp's sampler chain per sequence, on the CPU), "
                                      "backend (llama.cpp's samplers inside the decode, on the device that "
                                      "holds the output layer) or auto (backend with the output layer on a "
                                      "GPU, where the build can; else batched).", choices=SAMPLER_PATHS)
    in_process: bool = _opt(False, "Load the engine in this process instead of a supervised child process (a "
                                   "native crash then ends the run): for debugging.")
    # Several GPUs (llama.cpp's split) and several engines (replicas on Ray): see aimo_gguf.fit.shares, aimo_gguf.replicas.
    split_mode: str = _opt(DEFAULT_SPLIT_MODE, "How one model spreads over several GPUs: none (all on --main-gpu), "
                                               "layer (whole layers per GPU) or row (each matrix's rows across "
                                               "the GPUs). Ignored on a CPU build.", choices=SPLIT_MODES)
    tensor_split: str | None = _opt(None, "Each GPU's share of the model, e.g. 3,1 [default: in proportion to "
                                          "each GPU's free memory].")
    main_gpu: int = _opt(0, "The GPU holding the whole model with --split-mode none, and the KV cache and small "
                            "tensors with row.")
    ray: str | None = _opt(None, "Solve on replicas on Ray: with no ADDRESS a local Ray cluster is started, "
                                 "else the cluster at ADDRESS (e.g. auto, ray://head:10001) is joined. "
                                 "Needs pip install 'aimo-gguf[ray]'.", flag_value="local", metavar="[ADDRESS]")
    replicas: int | None = _opt(None, "With --ray: engines, each loading the model once [default: one per GPU "
                                      "of the cluster, or --gpus-per-replica of them; required without GPUs].")
    gpus_per_replica: float | None = _opt(None, "With --ray: GPUs each replica gets, its model split over them "
                                                "[default: 1 where the cluster has GPUs, else 0].")

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size == "auto" or (isinstance(self.batch_size, int) and self.batch_size >= 1),
             f"--batch-size must be 'auto' or at least 1, got {self.batch_size}"),
            (self.samples >= 1, f"--samples must be at least 1, got {self.samples}"),
            (self.max_tokens >= 1, f"--max-tokens must be at least 1, got {self.max_tokens}"),
            (self.ctx == 0 or self.ctx >= 16, f"--ctx must be 0 (automatic) or at least 16, got {self.ctx}"),
            (self.n_gpu_layers == "auto" or (isinstance(self.n_gpu_layers, int) and self.n_gpu_layers >= -1),
             f"--n-gpu-layers must be 'auto', -1 (all) or more, got {self.n_gpu_layers}"),
            (self.threads is None or self.threads >= 1, f"--threads must be at least 1, got {self.threads}"),
            (self.temperature >= 0, f"--temperature must be 0 or more, got {self.temperature}"),
            (0 < self.top_p <= 1, f"--top-p must be in (0, 1], got {self.top_p}"),
            (0 <= self.min_p < 1, f"--min-p must be in [0, 1), got {self.min_p}"),
            (self.top_k >= 0, f"--top-k must be 0 or more, got {self.top_k}"),
            (self.min_answer <= self.max_answer, "--min-answer is larger than --max-answer"),
            (self.min_answer <= self.fallback_answer <= self.max_answer,
             f"--fallback-answer {self.fallback_answer} is outside --min-answer..--max-answer "
             f"({self.min_answer}..{self.max_answer}): it would be written as an answer no problem can have"),
            (self.modulo is None or self.modulo >= 1, f"--modulo must be at least 1, got {self.modulo}"),
            (self.early_stop_votes >= 0, f"--early-stop-votes must be 0 (off) or more, got {self.early_stop_votes}"),
            (self.early_stop_lead >= 0, f"--early-stop-lead must be 0 (off) or more, got {self.early_stop_lead}"),
            (self.stop_unanswered >= 0, f"--stop-unanswered must be 0 (off) or more, got {self.stop_unanswered}"),
            (self.vote in VOTE_MODES, f"--vote must be one of {', '.join(VOTE_MODES)}, got {self.vote!r}"),
            (self.vote_floor > 0, f"--vote-floor must be positive, got {self.vote_floor}"),
            (0 < self.keep_top <= 100, f"--keep-top must be in (0, 100], got {self.keep_top}"),
            (self.stop_below is None or 0 <= self.stop_below <= 100,
             f"--stop-below must be a percentile in [0, 100], got {self.stop_below}"),
            (self.stop_warmup >= 1, f"--stop-warmup must be at least 1, got {self.stop_warmup}"),
            (self.stop_below is None or self.stop_warmup < self.samples,
             f"--stop-below needs more --samples ({self.samples}) than --stop-warmup ({self.stop_warmup})"),
            (self.problem_time_cap is None or self.problem_time_cap > 0,
             f"--problem-time-cap must be positive, got {self.problem_time_cap}"),
            (self.confidence is not False or not self.needs_confidence,
             "--no-confidence: --vote, --keep-top and --stop-below need the confidence"),
            (self.confidence_top_k >= 1, f"--confidence-top-k must be at least 1, got {self.confidence_top_k}"),
            (self.group_window >= 0, f"--group-window must be 0 (automatic) or more, got {self.group_window}"),
            (self.tail_window >= 0, f"--tail-window must be 0 (automatic) or more, got {self.tail_window}"),
            (self.stop_below is None or self.windows[0] <= self.max_tokens,
             f"--group-window ({self.group_window}) is longer than --max-tokens ({self.max_tokens}): no window "
             f"would fill, so --stop-below would cut nothing"),
            (self.time_limit is None or self.time_limit > 0, f"--time-limit must be positive, got {self.time_limit}"),
            (self.time_margin >= 0, f"--time-margin must be 0 (automatic) or more, got {self.time_margin}"),
            (self.time_limit is None or self.time_margin < self.time_limit,
             f"--time-margin ({self.time_margin:g} s) must be shorter than --time-limit ({self.time_limit} s)"),
            (self.recipe is None or self.recipe in RECIPES,
             f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}"),
            (not self.raw_prompt or self.prompt_style in ("auto", "plain"),
             f"--raw-prompt is a plain prompt: it cannot go with --prompt-style {self.prompt_style}"),
            (self.prompt_style in PROMPT_STYLES,
             f"--prompt-style must be one of {', '.join(PROMPT_STYLES)}, got {self.prompt_style!r}"),
            (self.reasoning_effort in REASONING_EFFORTS,
             f"--reasoning-effort must be one of {', '.join(REASONING_EFFORTS)}, got {self.reasoning_effort!r}"),
            (self.think_reserve >= 0, f"--think-reserve must be 0 (automatic) or more, got {self.think_reserve}"),
            (self.think_reserve < self.max_tokens,
             f"--think-reserve ({self.think_reserve}) must be smaller than --max-tokens ({self.max_tokens})"),
            (self.max_tool_calls >= 0, f"--max-tool-calls must be 0 or more, got {self.max_tool_calls}"),
            (self.tool_timeout > 0, f"--tool-timeout must be positive, got {self.tool_timeout}"),
            (self.tool_output_chars >= 20, f"--tool-output-chars must be at least 20, got {self.tool_output_chars}"),
            (self.tir_weight >= 1, f"--tir-weight must be 1 or more, got {self.tir_weight}"),
            (self.main_gpu >= 0, f"--main-gpu must be 0 or more, got {self.main_gpu}"),
            (self.replicas is None or self.replicas >= 1, f"--replicas must be at least 1, got {self.replicas}"),
            (self.gpus_per_replica is None or self.gpus_per_replica >= 0,
             f"--gpus-per-replica must be 0 or more, got {self.gpus_per_replica}"),
            (self.ray is not None or (self.replicas is None and self.gpus_per_replica is None),
             "--replicas and --gpus-per-replica need --ray"),
        ]
        self._check_finite()
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        check_choices(flash_attn=self.flash_attn, kv_type=self.kv_type, sampler=self.sampler,
                      split_mode=self.split_mode)
        check_threads(self.threads)
        if isinstance(self.batch_size, int):
            check_batch_size(self.batch_size)
        self.stop = tuple(self.stop)
        self._check_sizes()

    def _check_finite(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise InputError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")

    def _check_sizes(self) -> None:
        parse_tensor_split(self.tensor_split)  # a bad value fails here, before any load
        if self.max_memory is not None:  # checked even where nothing is 'auto', as every other value is
            try:
                parse_size(self.max_memory)
            except InputError as e:
                raise InputError(f"--max-memory: {e}") from None

    @property
    def tensor_split_values(self) -> tuple[float, ...] | None:
        """--tensor-split as numbers (None: llama.cpp's split by free memory)."""
        return parse_tensor_split(self.tensor_split)

    @property
    def needs_confidence(self) -> bool:
        """An option that cannot work without each sample's confidence."""
        return self.vote != "majority" or self.keep_top < 100 or self.stop_below is not None

    def confidence_settings(self, *, graded: bool = False, traces: bool = False) -> ConfidenceSettings | None:
        """What the engine computes per token, or None when nothing asks for it."""
        wanted = self.confidence if self.confidence is not None else (self.needs_confidence or graded or traces)
        if not wanted:
            return None
        group, tail = self.windows
        return ConfidenceSettings(top_k=self.confidence_top_k, group_window=group, tail_window=tail)

    @property
    def windows(self) -> tuple[int, int]:
        """--group-window and --tail-window with 0 resolved: a quarter of --max-tokens, 16 to 2048 (DeepConf's
        2048 suits its 32k-token traces; a window longer than a sample never fills)."""
        auto = min(DEFAULT_GROUP_WINDOW, max(16, self.max_tokens // 4))
        return self.group_window or auto, self.tail_window or min(DEFAULT_TAIL_WINDOW, auto)

    @property
    def margin(self) -> float:
        """Seconds held back from ``time_limit`` (the automatic default resolved)."""
        if self.time_margin:
            return self.time_margin
        limit = self.time_limit or 0
        return min(60.0, max(2.0, 0.01 * limit), 0.1 * limit)

    @property
    def sequence_ctx(self) -> int:
        """The context one sequence gets, after resolving the automatic default."""
        return self.ctx or PROMPT_ALLOWANCE + self.max_tokens

    @property
    def ctx_source(self) -> str:
        """Where ``sequence_ctx`` comes from, for messages: '--ctx 4096', or the automatic default's parts."""
        if self.ctx:
            return f"--ctx {self.ctx}"
        return f"the context {self.sequence_ctx} ({PROMPT_ALLOWANCE} + --max-tokens {self.max_tokens})"


def make_config(**options) -> RunConfig:
    """A RunConfig from flag values: ``recipe``'s settings first, every option given on top of them."""
    name = options.get("recipe")
    if name is not None and name not in RECIPES:
        raise InputError(f"--recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    settings = RECIPES[name].settings if name is not None else {}
    return RunConfig(**{**settings, **options})


def option_fields():
    """The fields of RunConfig in declaration order (the CLI builds its flags from them)."""
    return fields(RunConfig)
