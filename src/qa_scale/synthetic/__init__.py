"""Deterministic synthetic Chinese QA data for the demo and the tests (see :mod:`.paragraphs`).

``config`` → ``entities`` + ``templates`` → ``paragraphs`` (:func:`generate`) → ``writers``
(HW7 / SQuAD files and a corpus).
"""

from .config import SPLITS, SampleConfig
from .paragraphs import generate
from .templates import CATEGORIES, FACT_TYPES
from .writers import write_all, write_hw7, write_squad

__all__ = ["CATEGORIES", "FACT_TYPES", "SPLITS", "SampleConfig", "generate", "write_all", "write_hw7", "write_squad"]
