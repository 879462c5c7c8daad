"""Answer texts of spans, compared without making them: a fingerprint per (context, start, end).

Used by the n-best ranking of ``across_windows="sum_probability"`` (:func:`.nbest.rank_texts`),
which adds up the probabilities of equal texts: spans whose fingerprints differ have different
texts, so only spans that share one are compared as strings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Odd 64-bit multipliers of the text fingerprint (length and four sampled characters), wrapping.
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                 0xFF51AFD7ED558CCD], np.uint64)


def _codepoints(contexts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(code points of the distinct contexts joined [C] uint32, where each context starts in them [E])."""
    at, parts, n = {}, [], 0
    base = np.empty(len(contexts), np.int64)
    for x, c in enumerate(contexts):
        o = at.get(c)
        if o is None:
            o = at[c] = n
            parts.append(c)
            n += len(c)
        base[x] = o
    # surrogatepass: a lone surrogate (bad input) is a code point like any other here
    return np.frombuffer("".join(parts).encode("utf-32-le", "surrogatepass"), np.uint32), base


def text_fingerprints(ex: np.ndarray, a: np.ndarray, b: np.ndarray, contexts: Sequence[str]) -> np.ndarray:
    """A 31-bit fingerprint [N] int64 of each span's text ``contexts[ex][a:b]``: its length and four of
    its characters, sampled at fixed fractions of it; equal texts have equal fingerprints."""
    codes, base = _codepoints(contexts)
    length = b - a
    first = base[ex] + a
    hi = max(len(codes) - 1, 0)
    h = length.astype(np.uint64) * _MIX[0]
    for k, at in enumerate((first, first + length - 1, first + length // 2, first + length // 3), 1):
        h += codes.take(np.clip(at, 0, hi)).astype(np.uint64) * _MIX[k]
    h = np.where(length > 0, h, np.uint64(0)) >> np.uint64(33)
    return h.astype(np.int64)
