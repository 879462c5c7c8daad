"""The settings of ``qa-scale ensemble`` (fields → flags), kept light for ``--help``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..common.settings import option
from . import rules
from .errors import EnsembleError


@dataclass
class EnsembleOptions:
    """How ``qa-scale ensemble`` chooses members and weights, scores and writes."""

    weights: str | None = option(None, "comma-separated weights, one per store (normalised to sum 1; default: uniform)")
    recipe: Path | None = option(None, "ensemble recipe YAML (ensemble/*.yaml): members, weights, combination rule",
                                 io="input")
    combine: str | None = option(None, f"combination rule: {', '.join(rules.RULES)} (default: the recipe's, "
                                       f"else {rules.DEFAULT})")
    references: Path | None = option(None, "data file with answers: score the ensemble and every member",
                                     io="input")
    search_weights: bool = option(False, "search weights on --references (scipy SLSQP on the simplex, held-out "
                                          "check) and write a recipe")
    select_members: bool = option(False, "choose weights on --references by ensemble selection (greedy forward "
                                          "selection with replacement, Caruana et al. 2004; held-out check) and "
                                          "write a recipe")
    select_steps: int | None = option(None, "--select-members: additions at most (default: 2 × the number of "
                                            "stores)", ge=1)
    holdout: float = option(0.3, "fraction of reference examples held out of the search or selection", gt=0, lt=1)
    search_metric: Literal["f1", "em"] = option("f1", "metric that decides between searched (or selected) and "
                                                      "uniform weights; --select-members climbs it")
    recipe_out: Path | None = option(None, "where --search-weights or --select-members writes the recipe "
                                           "(default: OUT/recipe.yaml)", io="file")
    nbest: bool = option(True, "also write the n-best lists (--no-nbest is faster)")

    def __post_init__(self) -> None:
        if sum(map(bool, (self.recipe, self.weights, self.search_weights, self.select_members))) > 1:
            raise EnsembleError("give at most one of --weights, --recipe, --search-weights and --select-members")
        if self.select_steps is not None and not self.select_members:
            raise EnsembleError("--select-steps applies to --select-members only")
        if self.combine is not None:
            rules.get(self.combine)
