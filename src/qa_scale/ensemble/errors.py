"""The error of the ensemble stage."""


class EnsembleError(ValueError):
    """Stores that cannot be averaged, weights that make no mean, or options that contradict."""
