"""What an LLM judge costs: calls, tokens and dollars, before (estimate) and after (usage).

Typical token counts per call were measured on this project's prompts (prompts.py) with
SmolLM2's 49k BPE tokenizer (GPT-4o's tokenizer gives similar counts on English): a rating
prompt with a 128-token generation (about 335 tokens), an explanation prompt with
SAEBench's 15 excerpts of 21 tokens (about 600), a detection prompt with SAEBench's 14
excerpts (about 480); completions as the prompts ask for them (two sentences and a rating
line; one explanation line, cf. SAEBench's 30-token cap; one answer line). Estimates only:
the logs report the actual usage.
"""

from __future__ import annotations

from dataclasses import dataclass

# (prompt tokens, completion tokens) per call; see the module docstring.
TYPICAL_TOKENS: dict[str, tuple[int, int]] = {
    "rating": (340, 40),
    "explain": (600, 25),
    "detect": (480, 10),
}


@dataclass(frozen=True)
class CostEstimate:
    calls: int
    prompt_tokens: int
    completion_tokens: int
    dollars_input: float
    dollars_output: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def dollars(self) -> float:
        return self.dollars_input + self.dollars_output

    def __add__(self, other: CostEstimate) -> CostEstimate:
        return CostEstimate(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.dollars_input + other.dollars_input,
            self.dollars_output + other.dollars_output,
        )

    def __str__(self) -> str:
        return (
            f"{self.calls:,} calls, {self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion tokens, "
            f"${self.dollars:,.2f}"
        )


def usage_cost(prompt_tokens: int, completion_tokens: int, price_per_m_input: float, price_per_m_output: float) -> float:
    """Dollars for the given token counts at prices per 1M tokens."""
    return prompt_tokens * price_per_m_input / 1e6 + completion_tokens * price_per_m_output / 1e6


def estimate_cost(
    calls: int,
    prompt_tokens_per_call: float,
    completion_tokens_per_call: float,
    price_per_m_input: float,
    price_per_m_output: float,
) -> CostEstimate:
    """Calls, tokens and dollars for ``calls`` requests of the typical size given."""
    if calls < 0:
        raise ValueError("calls must be >= 0")
    prompt = int(round(calls * prompt_tokens_per_call))
    completion = int(round(calls * completion_tokens_per_call))
    return CostEstimate(
        calls=calls,
        prompt_tokens=prompt,
        completion_tokens=completion,
        dollars_input=prompt * price_per_m_input / 1e6,
        dollars_output=completion * price_per_m_output / 1e6,
    )


def steering_judge_calls(n_saes: int, n_concepts: int, n_instructions: int, n_factors: int) -> int:
    """Judge calls of the AxBench protocol: 3 ratings per generation, one generation per
    (SAE, concept, instruction, factor). All instructions are rated at every factor: the
    selection half picks the factor, the held-out half is read at that factor."""
    return 3 * n_saes * n_concepts * n_instructions * n_factors


def autointerp_judge_calls(n_saes: int, n_latents: int) -> int:
    """One explanation and one detection call per sampled latent."""
    return 2 * n_saes * n_latents


def estimate_task(calls: int, task: str, price_per_m_input: float, price_per_m_output: float) -> CostEstimate:
    """``estimate_cost`` with the typical token counts of ``task`` (rating, explain, detect)."""
    prompt, completion = TYPICAL_TOKENS[task]
    return estimate_cost(calls, prompt, completion, price_per_m_input, price_per_m_output)
