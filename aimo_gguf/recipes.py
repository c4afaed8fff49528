"""Named bundles of ``run`` settings (``--recipe NAME``), each with where its numbers come from.

A recipe fills RunConfig fields before the flags: every flag given (or its
AIMO_GGUF_* variable) still overrides it (``aimo_gguf.config.make_config``).
The registry names one recipe per model (``aimo-gguf models``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

# Our wording of the public AIMO3 baseline's instructions (answer range and \boxed{}).
AIMO3_INSTRUCTIONS = (
    "You are an expert competitor in the International Mathematical Olympiad. Solve the problem with careful, "
    "rigorous reasoning, and check your work; use the python tool to compute, to test conjectures on small "
    "cases and to verify results. The final answer is a non-negative integer between 0 and 99999: put it "
    "within \\boxed{} in your final message."
)


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str  # one line: what it is for
    source: str  # where the settings come from
    settings: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # RunConfig field -> value
    notes: str = ""  # where it departs from its source, and why

    def describe(self) -> str:
        lines = [f"{self.name}: {self.summary}", f"  source: {self.source}"]
        if self.notes:
            lines.append(f"  notes: {self.notes}")
        for key, value in self.settings.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                lines.append(f"  {flag}" if value else f"  --no-{flag[2:]}")
            elif isinstance(value, str) and len(value) > 60:
                lines.append(f"  {flag} {value[:57]!r}...")
            else:
                lines.append(f"  {flag} {value}")
        return "\n".join(lines)


def _recipe(name: str, summary: str, source: str, notes: str = "", **settings) -> Recipe:
    return Recipe(name, summary, source, MappingProxyType(settings), notes)


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    _recipe(
        "aimo3-gpt-oss",
        "gpt-oss-120b / 20b as the public AIMO3 baseline ran it: 8 attempts with a stateful Python tool, "
        "stop at 4 agreeing, entropy-weighted votes",
        "the public AIMO3 baseline notebook (Kaggle, nihilisticneuralnet '[44/50] LET ME (over)COOK!!!', as "
        "forked in github.com/nat-nischw/model-capability-dominates-lessons-aimo3): attempts=8, temperature=1.0, "
        "min_p=0.02, early_stop=4, top_logprobs=5, jupyter_timeout=6 s, context 65536 tokens, 128 turns, "
        "problem timeout 300-900 s, reasoning effort high, votes weighted 1 / mean entropy",
        notes="the instructions are ours, not the notebook's text; the entropy floor is --vote-floor's (the "
              "notebook's is 1e-9); a problem's time is its share of --time-limit, capped at 900 s (the "
              "notebook's 300 s floor has no counterpart); 8 sequences of 64k tokens need a GPU",
        prompt_style="harmony", reasoning_effort="high", system_prompt=AIMO3_INSTRUCTIONS, tir=True,
        samples=8, batch_size=8, temperature=1.0, min_p=0.02, top_p=1.0, top_k=0, early_stop_votes=4,
        vote="entropy", confidence_top_k=5, tool_timeout=6.0, max_tool_calls=128, problem_time_cap=900.0,
        max_tokens=65024,  # with --ctx automatic (512 + --max-tokens): the notebook's 65536-token context
    ),
    _recipe(
        "r1-distill",
        "DeepSeek-R1 distills, QwQ and OpenMath-Nemotron: think prompts, the models' recommended sampling",
        "the DeepSeek-R1 model card (Usage Recommendations): temperature 0.6, top-p 0.95, no system prompt, "
        "'Please reason step by step, and put your final answer within \\boxed{}.' in the user turn, the reply "
        "opened with '<think>\\n', generations of up to 32768 tokens",
        prompt_style="think", temperature=0.6, top_p=0.95, top_k=0, min_p=0.0, max_tokens=32768,
    ),
    _recipe(
        "qwen-math",
        "Qwen2.5-Math instruct models: plain chat prompts with Qwen2.5-Math's chain-of-thought system prompt",
        "the Qwen2.5-Math README (the CoT system prompt); sampling and budgets are aimo-gguf's defaults",
        prompt_style="plain",
    ),
)}
