"""Tier 2: prompt families, harmony tool calls and recipes through the solver, the runner and the CLI,
on the fake engine (whose "gpt-oss" vocabulary has harmony's special tokens)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from fakes import FakeEngine, problems_of

from aimo_gguf.cli import cli
from aimo_gguf.config import RunConfig, make_config
from aimo_gguf.errors import InputError
from aimo_gguf.pipeline import runner as run_module
from aimo_gguf.recipes import RECIPES
from aimo_gguf.solving.solver import Solver
from aimo_gguf.styles import style_for
from aimo_gguf.styles.think import ThinkBudget

FINAL = "<|channel|>analysis<|message|>Easy, maybe 3.<|end|><|start|>assistant<|channel|>final<|message|>" \
        "\\boxed{{{}}}"
CALL = "<|channel|>analysis<|message|>Let me compute.<|end|><|start|>assistant<|channel|>analysis to=python code" \
       "<|message|>print({} * 2)<|call|>"


def solve(engine, problems, **kw):
    kw.setdefault("batch_size", engine.batch_size)
    return sorted(Solver(engine, RunConfig(**kw)).solve(problems), key=lambda r: r.index)


def test_a_gpt_oss_model_gets_harmony_prompts_and_answers_from_its_final_channel():
    engine = FakeEngine(lambda p, s: FINAL.format(p + 1), batch_size=2, architecture="gpt-oss")
    results = solve(engine, problems_of(3), samples=2)
    assert [r.answer for r in results] == [1, 2, 3]
    assert all(r.answers_final == 2 and r.answers_fallback == 0 for r in results)
    [request] = engine.pulled[:1]
    text = "".join(chr(t) if t < 0x110000 else "#" for t in request.prompt)
    assert text.startswith("#system#") and "Reasoning: high" in text and request.render_special


def test_prompt_style_plain_overrides_what_the_gguf_says():
    engine = FakeEngine(lambda p, s: FINAL.format(5), architecture="gpt-oss")
    [result] = solve(engine, problems_of(1), samples=1, prompt_style="plain")
    assert result.answer == 5 and result.answers_final == 0  # plain: the whole text, no channel counted
    assert not engine.pulled[0].render_special


def test_harmony_on_a_model_without_its_tokens_is_one_clear_error():
    with pytest.raises(InputError, match="harmony needs gpt-oss's special tokens"):
        Solver(FakeEngine(str), RunConfig(prompt_style="harmony"))


def test_a_harmony_tool_call_runs_in_the_sandbox_and_the_final_answer_follows_it():
    def reply(p, s):
        return CALL.format(21) + "<|channel|>final<|message|>\\boxed{42}"

    engine = FakeEngine(reply, batch_size=2, architecture="gpt-oss")
    solver = Solver(engine, RunConfig(samples=2, batch_size=2, tir=True, max_tool_calls=2))
    [result] = list(solver.solve(problems_of(1)))
    assert result.answer == 42 and result.answers_final == 2
    assert solver.tool_stats.calls == 2 and solver.tool_stats.ok == 2
    [first] = [c for c in engine.finished if c.request.key == (0, 0)]
    # The reply came back as the python tool's message, and the assistant turn was opened again.
    assert "<|call|><|start|>python to=assistant<|channel|>analysis<|message|>42<|end|><|start|>assistant" \
        in first.text


def test_the_tool_is_declared_in_the_harmony_system_message():
    engine = FakeEngine(str, architecture="gpt-oss")
    text = style_for(engine, RunConfig(tir=True, tool_timeout=6)).prompt(problems_of(1)[0].problem)
    assert "## python" in text and "time out after 6 seconds" in text and "```python" not in text


def test_a_think_model_gets_the_instruction_in_the_user_turn_and_a_thinking_budget():
    template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant><think>\n"
    engine = FakeEngine(lambda p, s: "hmm 3</think>\\boxed{4}", chat_template=template, name="DeepSeek R1 Distill")
    [result] = solve(engine, problems_of(1), samples=2)
    assert result.answer == 4 and result.answers_final == 2
    request = engine.pulled[0]
    text = "".join(map(chr, request.prompt))
    assert "<system>" not in text and text.startswith("<user>What is 0 + 1?\n\nPlease reason step by step")
    assert isinstance(request.tool, ThinkBudget) and request.tool.reserve == 128 and not request.tool.closed


def test_a_think_sample_without_a_final_part_answers_from_its_thinking():
    engine = FakeEngine(lambda p, s: "so it is \\boxed{9} I think", name="QwQ-32B")
    [result] = solve(engine, problems_of(1), samples=1)
    assert result.answer == 9 and result.answers_fallback == 1 and result.answers_final == 0


def test_the_summary_counts_where_answers_came_from(tmp_path):
    engine = FakeEngine(lambda p, s: FINAL.format(7) if s else "<|channel|>analysis<|message|>it is 7",
                        batch_size=2, architecture="gpt-oss")
    out = run_module.run(problems_of(2), engine=engine, output=tmp_path / "s.csv", summary=tmp_path / "s.json",
                     progress=False, samples=2, batch_size=2)
    s = out.summary
    assert (s.prompt_style, s.answers_final, s.answers_fallback) == ("harmony", 2, 2)
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["answers_final"] == 2 and data["prompt_style"] == "harmony"
    assert "answers from" in s.table() and "final channel" in s.table()



@pytest.mark.parametrize(("style", "row"), [
    ("harmony", "answers from  3 the final channel, 1 the analysis (fallback) (harmony prompts)"),
    ("think", "answers from  3 the text after </think>, 1 the thinking (fallback) (think prompts)"),
    ("plain", None), ("", None),
])
def test_the_summary_names_each_family_s_answer_parts(style, row):
    """The family's own words for where answers came from, by its name (a replica sends the name alone)."""
    from aimo_gguf.pipeline.summary import RunSummary

    summary = RunSummary(problems=2, graded=2, samples_per_problem=2, prompt_style=style, answers_final=3,
                         answers_fallback=1)
    rows = [line for line in summary.table().splitlines() if line.startswith("answers from")]
    assert [" ".join(r.split()) for r in rows] == ([] if row is None else [" ".join(row.split())])

THINK_TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant><think>\n"
FAMILIES = {  # the engine of a model of each family, and what its samples say
    "harmony": lambda: FakeEngine(lambda p, s: FINAL.format(p + 1), batch_size=2, architecture="gpt-oss"),
    "think": lambda: FakeEngine(lambda p, s: f"hmm</think>\\boxed{{{p + 1}}}", batch_size=2,
                                chat_template=THINK_TEMPLATE, name="DeepSeek R1 Distill"),
    "plain": lambda: FakeEngine(lambda p, s: f"\\boxed{{{p + 1}}}", batch_size=2),
}


@pytest.mark.parametrize("n", [1, 3, 5])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_family_is_worked_out_once_per_run_and_once_for_every_predict(monkeypatch, tmp_path, family, n):
    """Detection (and harmony's token lookup with it) runs once for a whole run and once for the adapter,
    not once per problem or per Solver."""
    from aimo_gguf import styles
    from aimo_gguf.kaggle import KaggleSolver

    detected = []
    real = styles.detect_style
    monkeypatch.setattr(styles, "detect_style", lambda *a: detected.append(a) or real(*a))
    out = run_module.run(problems_of(n), engine=FAMILIES[family](), output=tmp_path / "s.csv", progress=False,
                         samples=2, batch_size=2, max_answer=10**6)
    assert out.summary.prompt_style == family and [a for _, a in out.answers] == list(range(1, n + 1))
    assert len(detected) == 1
    solver = KaggleSolver(engine=FAMILIES[family](), total_seconds=600, safety_seconds=10, n_problems=n, samples=2)
    answers = [solver.predict(f"q{i}", f"What is {i} + 1?")["answer"].to_list() for i in range(n)]
    assert answers == [[1]] * n and len(detected) == 2  # each predict solves its problem as the first one


@pytest.mark.parametrize("tir", [False, True])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_style_is_plain_data_that_a_child_process_could_take_as_it_is(family, tir):
    """No engine inside: a pickled style (what a replica in a child process would get) prompts alike."""
    import pickle

    style = style_for(FAMILIES[family](), RunConfig(tir=tir))
    copy = pickle.loads(pickle.dumps(style))
    assert copy == style and copy.name == family
    assert [copy.prompt(p.problem) for p in problems_of(3)] == [style.prompt(p.problem) for p in problems_of(3)]


# --- recipes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_is_a_valid_config_of_real_fields_and_says_where_it_comes_from(name):
    recipe = RECIPES[name]
    config = make_config(recipe=name)
    for key, value in recipe.settings.items():
        assert getattr(config, key) == value
    assert recipe.source and recipe.summary and name in recipe.describe()


def test_the_aimo3_recipe_is_the_public_baseline():
    c = make_config(recipe="aimo3-gpt-oss")
    assert (c.samples, c.temperature, c.min_p, c.early_stop_votes, c.vote, c.tir, c.tool_timeout) == \
        (8, 1.0, 0.02, 4, "entropy", True, 6.0)
    assert c.prompt_style == "harmony" and c.reasoning_effort == "high" and c.problem_time_cap == 900


def test_options_given_override_the_recipe():
    c = make_config(recipe="r1-distill", temperature=0.3, max_tokens=2048)
    assert (c.temperature, c.max_tokens, c.top_p, c.prompt_style) == (0.3, 2048, 0.95, "think")
    assert asdict(make_config()) == asdict(RunConfig())  # no recipe: the defaults


@pytest.fixture
def recorded(monkeypatch):
    calls = []

    def run(problems, **kwargs):
        calls.append(kwargs)
        from aimo_gguf.pipeline.summary import RunSummary

        return run_module.RunResult(answers=[], summary=RunSummary(problems=0))

    monkeypatch.setattr(run_module, "run", run)
    return calls


NON_CONFIG = ("output", "summary", "traces", "journal", "resume", "progress", "verbose")


def test_the_cli_passes_only_the_flags_given_so_the_recipe_fills_the_rest(runner, recorded, monkeypatch):
    monkeypatch.setenv("AIMO_GGUF_SAMPLES", "3")
    result = runner.invoke(cli, ["run", "-q", "--recipe", "aimo3-gpt-oss", "--temperature", "0.8",
                                     "--no-tir"])
    assert result.exit_code == 0, result.output
    [call] = recorded
    config = make_config(**{k: v for k, v in call.items() if k not in NON_CONFIG})
    assert (config.temperature, config.tir, config.samples) == (0.8, False, 3)  # flags and variables win
    assert (config.min_p, config.early_stop_votes, config.vote) == (0.02, 4, "entropy")  # the recipe's


def test_an_unknown_recipe_or_style_is_one_line(runner):
    for args, message in [(["--recipe", "nope"], "'nope' is not one of"),
                          (["--prompt-style", "fancy"], "'fancy' is not one of"),
                          (["--reasoning-effort", "max"], "'max' is not one of"),
                          (["--think-reserve", "5000"], "--think-reserve (5000) must be smaller")]:
        result = runner.invoke(cli, ["run", *args])
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_recipes_and_models_list_them(runner):
    result = runner.invoke(cli, ["recipes"])
    assert result.exit_code == 0 and all(name in result.stdout for name in RECIPES)
    assert "source:" in result.stdout and "--min-p 0.02" in result.stdout
    table = runner.invoke(cli, ["models"]).stdout
    assert "recipe" in table and "aimo3-gpt-oss" in table and "r1-distill" in table and "qwen-math" in table


def test_the_competition_adapter_takes_a_recipe_and_flags_over_it():
    from aimo_gguf.kaggle import KaggleSolver

    engine = FakeEngine(lambda p, s: FINAL.format(12), batch_size=8, architecture="gpt-oss")
    solver = KaggleSolver(engine=engine, recipe="aimo3-gpt-oss", tir=False, max_tokens=400, total_seconds=3600,
                          safety_seconds=60, n_problems=1)
    assert (solver.config.samples, solver.config.min_p, solver.config.tir) == (8, 0.02, False)
    frame = solver.predict("q1", "What is 11 + 1?")
    assert frame["answer"].to_list() == [12] and solver.stats.failures == 0


def test_prompt_styles_that_cannot_work_are_one_clear_error():
    with pytest.raises(InputError, match="--raw-prompt is a plain prompt"):
        RunConfig(raw_prompt=True, prompt_style="harmony")
    with pytest.raises(InputError, match="think needs the model's chat template"):
        Solver(FakeEngine(str, chat_template=None), RunConfig(prompt_style="think"))
    # Detected, not asked for: a reasoning model without a template is prompted plainly, with no budget.
    engine = FakeEngine(lambda p, s: "\\boxed{3}", chat_template=None, name="DeepSeek R1 Distill")
    [result] = solve(engine, problems_of(1), samples=1)
    assert result.answer == 3 and engine.pulled[0].tool is None


def test_a_split_models_pull_command_is_its_first_part_alone():
    from aimo_gguf.models import load_registry

    [big] = [e for e in load_registry() if e.name == "gpt-oss-120b"]
    assert len(big.files) == 2 and big.pull_commands() == [f"aimo-gguf pull {big.repo} {big.files[0]}"]
