"""Progress bars: tqdm on rank 0, silent elsewhere."""

from __future__ import annotations

from tqdm import tqdm


def progress(total: int | None, enabled: bool, desc: str | None = None) -> tqdm:
    """A tqdm bar on rank 0; elsewhere ``tqdm(disable=True)``, whose methods do nothing.

    Low smoothing keeps the ETA near the run's average speed, which pauses for evaluation
    and checkpointing would otherwise throw about.
    """
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, smoothing=0.05)
