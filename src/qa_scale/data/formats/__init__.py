"""Input formats, by name: HW7 and SQuAD style (CMRC 2018, DRCD). Add one with a module here.

Each module registers one :class:`~.registry.DataFormat` whose reader yields :class:`RawQuestion`
records (``need`` fetches a key or raises a :class:`DataError` naming the file and the place);
importing this package registers them all.
"""

from ..records import DataError, RawQuestion, need
from . import hw7, squad  # noqa: F401 - registers the built-in formats
from .registry import FORMATS, DataFormat, detect, get, register

__all__ = ["FORMATS", "DataError", "DataFormat", "RawQuestion", "detect", "get", "need", "register"]
