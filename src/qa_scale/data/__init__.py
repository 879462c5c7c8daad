"""Stage 1 of the data flow: raw files → examples → windows (and their on-disk store) → batches.

``qa_scale.data.load`` / ``load_references`` are the entry points; ``formats`` holds the
registered input formats, ``tokenization`` the tokenizers, ``windows`` the sliding windows,
``window_store`` their Arrow cache, ``batches`` the engine's micro-batches; ``examples`` reads and
validates a file, ``references`` reads its answers for scoring; ``hf_datasets`` reads a Hugging
Face ``datasets`` dataset (a ``save_to_disk`` folder or ``hf:NAME[:CONFIG][@SPLIT]``) wherever a
data file is taken.
"""

from .examples import (
    Answer,
    DataReport,
    Dataset,
    Example,
    Issue,
    load,
    load_many,
    read_json,
    read_records,
    validate,
)
from .records import DataError
from .references import References, load_references

__all__ = ["Answer", "DataError", "DataReport", "Dataset", "Example", "Issue", "References", "load",
           "load_many", "load_references", "read_json", "read_records", "validate"]
