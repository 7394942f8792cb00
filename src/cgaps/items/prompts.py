"""Zero-shot prompts: one clear answer format per answer type.

The prompt is the user turn as the model sees it (the evaluate stage wraps it in the chat
template). Each format instruction names exactly the form the grader extracts first, so a
compliant model is graded by the strict path and a sloppy one by the lenient fallbacks.
Multiple-choice prompts list the options as ``A) ...`` in the order of ``choices``; the
evaluate stage relies on that order when it ranks options by log-likelihood.

:func:`cloze` is the same item for the cloze protocols (``mc_scoring: loglik``/``loglik_norm``):
the options are scored as continuations, so they must not be listed (a model can copy a listed
option, docs/benchmarks.md). It removes exactly the tail that :func:`multiple_choice` appends
(the option lines and the format instruction) and ends the prompt with ``Answer:``, as the
harness's ARC and SocialIQA prompts do; a prompt without that tail (a spec file's
``prompt_template``) is its author's and is used as written.
"""

from __future__ import annotations

from cgaps.answers import CHOICE_TYPES, LETTERS, too_many_options
from cgaps.errors import CGapsError

MC_FORMAT = "Answer with the letter of the correct option, like 'Answer: {first}'."
YESNO_FORMAT = "Answer with yes or no."
# No example number: a weak model copies it (SmolLM2 answered 'The answer is 42.' to GSM8K).
NUMBER_FORMAT = "Give only the final number, in the form 'The answer is <number>.'"
NUMBER_COT = "Think step by step, then finish with 'The answer is N.' where N is the final number."
MATH_FORMAT = "Give only the final answer, inside \\boxed{}."
MATH_COT = "Reason step by step, then put the final answer inside \\boxed{}."
SHORT_FORMAT = "Answer with a few words only."


def join(*parts: str | None) -> str:
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def options_block(options: list[str]) -> str:
    problem = too_many_options(len(options))
    if problem:  # the loaders name the file and line first; this guards any other caller
        raise CGapsError(f"a multiple-choice item {problem}")
    return "\n".join(f"{letter}) {str(text).strip()}" for letter, text in zip(LETTERS, options, strict=False))


def multiple_choice(
    question: str, options: list[str], context: str | None = None, instruction: str | None = None
) -> str:
    fmt = MC_FORMAT.format(first=LETTERS[0])
    return join(instruction, context, question, options_block(options), fmt)


CLOZE_CUE = "Answer:"


def mc_tail(options: list[str]) -> str:
    """What :func:`multiple_choice` appends after the question: the option lines and the format."""
    return join(options_block(options), MC_FORMAT.format(first=LETTERS[0]))


def cloze(prompt: str, options: list[str]) -> str:
    """``prompt`` without its listed options and format instruction, ending in ``Answer:`` (see the
    module docstring); unchanged when it does not end with :func:`mc_tail` of ``options``."""
    tail = "\n\n" + mc_tail(options)
    if not prompt.endswith(tail):
        return prompt
    return prompt[: -len(tail)].rstrip() + "\n" + CLOZE_CUE


def yes_no(question: str, context: str | None = None) -> str:
    return join(context, question, YESNO_FORMAT)


def number(question: str, chain_of_thought: bool = False) -> str:
    return join(question, NUMBER_COT if chain_of_thought else NUMBER_FORMAT)


def math(problem: str, chain_of_thought: bool = False) -> str:
    return join(problem, MATH_COT if chain_of_thought else MATH_FORMAT)


def short(question: str) -> str:
    return join(question, SHORT_FORMAT)


def by_answer_type(
    answer_type: str, question: str, options: list[str] | None = None, chain_of_thought: bool = False
) -> str:
    """The default prompt of a custom benchmark item, from its answer type."""
    if answer_type in CHOICE_TYPES and options:
        return multiple_choice(question, options)
    if answer_type == "yesno":
        return yes_no(question)
    if answer_type == "number":
        return number(question, chain_of_thought)
    if answer_type == "math":
        return math(question, chain_of_thought)
    if answer_type == "short":
        return short(question)
    return question
