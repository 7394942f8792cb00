"""The config of the labels stage (``cgaps label``), documented field by field.

One dataclass holds every default and every check: :func:`cgaps.labels.stage.label_run` takes
it, and the command line generates its flags from the fields (the help text is each field's
``metadata["help"]``). Only the standard library and the light :mod:`cgaps.config` load here,
so ``cgaps --help`` reads the fields without numpy. The method behind each config field is
docs/method.md §5.
"""

from __future__ import annotations

from dataclasses import dataclass

from cgaps.config_fields import check_options, documented, is_integer, is_number


@dataclass(frozen=True)
class LabelConfig:
    """What the labels stage computes, imports and asks a language model."""

    tokens: int = documented(8, "Distinctive tokens kept per concept.")
    prior: float = documented(
        50.0,
        "Strength of the log-odds prior (in pseudo-tokens spread by the run's token base rates): "
        "larger values need more firings before a token counts as distinctive.",
    )
    min_log_odds: float = documented(
        3.0,
        "A distinctive token's log-odds among the concept's firing tokens must exceed its log-odds in "
        "the run by at least this (3: odds 20 times higher).",
    )
    output_tokens: int = documented(
        8, "Tokens kept per concept from the logit lens of its decoder direction."
    )
    enrich_p: float = documented(
        0.001, "Significance (hypergeometric p) a metadata group needs to appear in the provisional label."
    )
    phrase_share: float = documented(
        0.25,
        "A phrase label grows word by word while at least this share of the concept's strongest "
        "items (50) share the next word.",
    )
    format_items: float = documented(
        0.1,
        "Prompt text counts as repeated (instructions, templates, answer formats) when the same 4 words "
        "or marks occur verbatim in at least this share of the items' prompts.",
    )
    format_sentences: float = documented(
        0.01,
        "A whole sentence of 4 words or more counts as repeated prompt text (an instruction, boilerplate) "
        "when it occurs verbatim in at least this share of the items' prompts.",
    )
    format_mass: float = documented(
        0.5,
        "A concept (or theme) is marked format when at least this share of its saliency peaks on "
        "repeated prompt text.",
    )
    labels_file: str | None = documented(
        None,
        "A label file to import: a Neuronpedia explanations export (.json/.jsonl, optionally .gz) or a "
        "table with columns concept,label (.csv/.parquet).",
    )
    neuronpedia_model: str | None = documented(
        None, "The Neuronpedia model id the run's model has (default: its name's last path segment)."
    )
    neuronpedia_sae: str | None = documented(
        None,
        "The Neuronpedia SAE/source id the run's SAE has (e.g. 20-gemmascope-res-16k; default: its SAE id).",
    )
    labeler: str | None = documented(
        None, "Base URL of an OpenAI-compatible chat endpoint (e.g. http://127.0.0.1:8080/v1) for LLM labels."
    )
    labeler_model: str | None = documented(None, "The model name to ask at --labeler.")
    api_key_env: str | None = documented(
        None, "Environment variable holding the labeler's API key (never the key itself)."
    )
    llm_concepts: int = documented(
        50, "How many concepts the LLM labels: gaps first (by q), then strengths, then the rest by support."
    )
    llm_rate: float = documented(2.0, "At most this many labeler requests per second.")
    llm_retries: int = documented(4, "Retries of a failed labeler request (exponential backoff).")
    llm_timeout: float = documented(
        120.0,
        "Seconds to wait for one labeler reply (at most 10 of them for the connection); a labeler "
        "that never answers is an error after (llm_retries + 1) times this, plus the backoff.",
    )

    def __post_init__(self) -> None:
        integer, number = is_integer, is_number
        check_options(
            "label",
            self,
            (
                ("tokens", integer(self.tokens) and self.tokens >= 1, "an integer >= 1"),
                ("prior", number(self.prior) and self.prior > 0, "a number > 0"),
                ("min_log_odds", number(self.min_log_odds) and self.min_log_odds >= 0, "a number >= 0"),
                ("output_tokens", integer(self.output_tokens) and self.output_tokens >= 0, "an integer >= 0"),
                ("enrich_p", number(self.enrich_p) and 0 < self.enrich_p <= 1, "a number in (0, 1]"),
                (
                    "phrase_share",
                    number(self.phrase_share) and 0 < self.phrase_share <= 1,
                    "a number in (0, 1]",
                ),
                (
                    "format_items",
                    number(self.format_items) and 0 < self.format_items <= 1,
                    "a number in (0, 1]",
                ),
                (
                    "format_sentences",
                    number(self.format_sentences) and 0 < self.format_sentences <= 1,
                    "a number in (0, 1]",
                ),
                ("format_mass", number(self.format_mass) and 0 < self.format_mass <= 1, "a number in (0, 1]"),
                ("llm_concepts", integer(self.llm_concepts) and self.llm_concepts >= 1, "an integer >= 1"),
                ("llm_rate", number(self.llm_rate) and self.llm_rate > 0, "a number > 0"),
                ("llm_retries", integer(self.llm_retries) and self.llm_retries >= 0, "an integer >= 0"),
                ("llm_timeout", number(self.llm_timeout) and self.llm_timeout > 0, "a number > 0"),
            ),
        )
        if self.labeler is not None and not self.labeler_model:
            from cgaps.errors import CGapsError

            raise CGapsError("label option 'labeler' needs --labeler-model NAME (the model to ask)")
