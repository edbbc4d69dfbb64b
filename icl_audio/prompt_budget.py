"""The context budget of a prompt: how many demonstrations fit, and how much of each clip is kept (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from icl_audio.errors import ICLAudioError

# A demonstration keeps at least this many audio tokens (1 s at 50 tokens/s) when the context is
# short; below that, the least similar demonstration is dropped instead of cropping further.
MIN_DEMO_TOKENS = 50
# When cropping, the query may keep up to this many times the share of one demonstration: it is
# the clip being classified.
QUERY_SHARE = 2



@dataclass(frozen=True)
class BudgetPlan:
    """How many demonstrations to keep (the first ``n_demos``, most similar first) and audio caps.

    ``demo_cap``/``query_cap`` are the most audio tokens a demonstration / the query keeps (None:
    uncropped).
    """

    n_demos: int
    demo_cap: int | None
    query_cap: int | None


def plan_budget(demo_lengths: Sequence[int], query_length: int, demo_overheads: Sequence[int],
                base_overhead: int, max_context: int, min_demo_tokens: int = MIN_DEMO_TOKENS) -> BudgetPlan:
    """Fit demonstrations and query into ``max_context`` tokens (pure function).

    ``demo_lengths``: audio tokens per demonstration, most similar first; ``demo_overheads``: the
    non-audio tokens each demonstration costs (markup, label, separator); ``base_overhead``: everything
    else (instruction, query markup, the longest candidate continuation without audio).

    Policy: keep everything if it fits. Otherwise crop all clips to a common cap ``c`` (the largest that
    fits), the query keeping up to ``QUERY_SHARE * c``. If ``c`` would fall below ``min_demo_tokens``,
    drop the least similar demonstration and try again. With no demonstrations left, the query alone
    is cropped to what remains. Labels and structure are never cut. Raises ICLAudioError when even the
    structure alone does not fit.
    """
    n = len(demo_lengths)
    for m in range(n, -1, -1):
        avail = max_context - base_overhead - sum(demo_overheads[:m])
        lens = list(demo_lengths[:m])
        if avail < 1:
            continue
        if sum(lens) + query_length <= avail:
            return BudgetPlan(m, None, None)
        if m == 0:
            return BudgetPlan(0, None, min(query_length, avail))

        def used(c: int) -> int:
            return sum(min(x, c) for x in lens) + min(query_length, QUERY_SHARE * c)

        lo, hi = 0, max(max(lens), -(-query_length // QUERY_SHARE))
        while lo < hi:  # largest c with used(c) <= avail
            mid = (lo + hi + 1) // 2
            if used(mid) <= avail:
                lo = mid
            else:
                hi = mid - 1
        c = lo
        if c >= min_demo_tokens or all(x <= c for x in lens) and c > 0:
            query_cap = min(query_length, QUERY_SHARE * c)
            # Give tokens the integer cap left unused to the query (it matters most).
            spare = avail - used(c)
            if query_cap < query_length and spare > 0:
                query_cap = min(query_length, query_cap + spare)
            return BudgetPlan(m, c, query_cap)
    structure = base_overhead
    raise ICLAudioError(
        f"the prompt structure alone needs {structure} tokens of the {max_context}-token context "
        f"(labels too long or too many for the template): raise max_context or shorten the labels"
    )


def crop_centre(codes: np.ndarray, cap: int | None) -> np.ndarray:
    """The middle ``cap`` codes of ``codes`` (all of them when shorter or ``cap`` is None).

    Centred because sound events in dataset clips tend to sit in the middle, with silence at the edges.
    """
    if cap is None or len(codes) <= cap:
        return codes
    start = (len(codes) - cap) // 2
    return codes[start:start + cap]
