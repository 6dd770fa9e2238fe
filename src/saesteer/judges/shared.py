"""One judge for the SAEs of a grouped job (``eval_jobs.group_by``): built once (the offline
judge loads a reference LM and a sentence encoder; the LLM judge opens a connection), seen
by each SAE through a :class:`JudgeView` that reports only that SAE's usage, so every SAE's
outputs record what they would have recorded in a job of their own."""

from __future__ import annotations

from typing import Any


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class JudgeView:
    """Rates through ``judge``; ``stats()`` counts only the calls made since the view was
    made; ``close()`` leaves the judge open (the group job closes it after its last SAE)."""

    def __init__(self, judge: Any):
        self._judge = judge
        self._start = judge.stats()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._judge, name)

    def stats(self) -> dict[str, Any]:
        now = self._judge.stats()
        return {k: (v - self._start.get(k, 0) if _is_count(v) else v) for k, v in now.items()}

    def close(self) -> None:
        pass
