"""Ensemble recipes (``ensemble/*.yaml``): which members, with which weights, found how.

A recipe names each member by its logits store (the one its weight was chosen on, usually
dev) and by its model directory. ``qa-scale ensemble --recipe R`` with no stores averages the
recipe's own stores; given other stores (the same members' test predictions) it matches each
one to a member through the model path recorded in the store. The format is documented in
``ensemble/README.md``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml

from ..common.outputs import atomic_open
from ..common.settings import unknown_key_message
from ..inference.logits_store import Store, open_store
from . import rules
from .errors import EnsembleError

KEYS = ("members", "combine", "found_by", "scores")
MEMBER_KEYS = ("name", "store", "model", "weight")


@dataclass
class Member:
    """One model of the ensemble."""

    name: str
    weight: float
    store: str | None = None  # logits store the weight was found on
    model: str | None = None  # model directory, to match the member's other stores


@dataclass
class EnsembleRecipe:
    """Members and weights, plus how they were found (kept as written)."""

    members: list[Member]
    combine: str = rules.DEFAULT
    found_by: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    source: str | None = None  # the file it was read from (named in errors about its members)

    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.members]


def _refuse_unknown(keys, valid: Sequence[str], where: str) -> None:
    for key in keys:
        message = unknown_key_message(str(key), valid, where)
        if message:
            raise EnsembleError(message)


def _combine(raw: dict, path: Path) -> str:
    """The recipe's combination rule (``combine:``; default ``mean_logits``)."""
    name = raw.get("combine", rules.DEFAULT)
    if not isinstance(name, str) or name not in rules.RULES:
        raise EnsembleError(f"{path}: unknown combine rule {name!r}; registered: {', '.join(rules.RULES)}")
    return name


def load_recipe(path: str | os.PathLike) -> EnsembleRecipe:
    """Read and validate a recipe (through :mod:`qa_scale.common.inputs`: UTF-8 YAML, a mapping).

    Raises:
        EnsembleError: an unreadable file or YAML, a top level that is not a mapping, unknown keys,
            no members, a member without a store or model, a name/store/model that is not text, or a
            weight that is not a finite number ≥ 0 (or all of them 0); every message names the recipe.
    """
    from ..common.inputs import InputError, read_mapping

    path = Path(path)
    try:
        raw = read_mapping(path, "ensemble recipe")
    except InputError as err:
        raise EnsembleError(str(err)) from None
    if not isinstance(raw.get("members"), list) or not raw["members"]:
        raise EnsembleError(f"{path}: needs a non-empty list 'members'")
    _refuse_unknown(raw, KEYS, str(path))
    for key in ("found_by", "scores"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise EnsembleError(f"{path}: {key} must be a mapping, got {raw[key]!r}")
    members = []
    for n, m in enumerate(raw["members"]):
        where = f"{path}: member {n + 1}"
        if not isinstance(m, dict):
            raise EnsembleError(f"{where}: expected a mapping with {', '.join(MEMBER_KEYS)}")
        _refuse_unknown(m, MEMBER_KEYS, where)
        weight = m.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or not weight >= 0:
            raise EnsembleError(f"{where}: weight must be a number ≥ 0 (finite), got {weight!r}")
        for key in ("name", "store", "model"):
            if m.get(key) is not None and not isinstance(m[key], str):
                raise EnsembleError(f"{where}: {key} must be text (a name or a path), got {m[key]!r}")
        if not m.get("store") and not m.get("model"):
            raise EnsembleError(f"{where}: give its store, its model, or both")
        name = str(m.get("name") or Path(str(m.get("model") or m["store"])).parent.name or f"member{n + 1}")
        members.append(Member(name, float(weight), m.get("store"), m.get("model")))
    if not any(m.weight > 0 for m in members):
        raise EnsembleError(f"{path}: all weights are 0")
    return EnsembleRecipe(members, _combine(raw, path), raw.get("found_by") or {}, raw.get("scores") or {},
                          str(path))


def save_recipe(recipe: EnsembleRecipe, path: str | os.PathLike, comment: str = "") -> Path:
    """Write a recipe atomically, ``comment`` lines first (as ``#`` comments)."""
    body = {"members": [{k: v for k, v in vars(m).items() if v is not None} for m in recipe.members],
            "combine": recipe.combine, "found_by": recipe.found_by, "scores": recipe.scores}
    with atomic_open(path) as fh:
        fh.writelines(f"# {line}\n".replace("# \n", "#\n") for line in comment.splitlines())
        yaml.safe_dump(body, fh, sort_keys=False, allow_unicode=True, width=1000)
    return Path(path)


def _same_path(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def resolve(recipe: EnsembleRecipe, stores: Sequence[Store] | None = None) -> tuple[list[Store], list[float]]:
    """The stores to average and their weights.

    Args:
        recipe: the recipe.
        stores: stores to match to members by model path; default: the recipe's own stores.

    Raises:
        EnsembleError: a store matches no member or several, or a member of weight > 0 has no store.
    """
    if stores is None:
        missing = [m.name for m in recipe.members if not m.store]
        if missing:
            raise EnsembleError(f"recipe members without a store: {', '.join(missing)}; pass the stores to average")
        opened = []
        for n, m in enumerate(recipe.members):
            try:
                opened.append(open_store(m.store))
            except ValueError as err:  # StoreError, InputError: said as the recipe's member, where the path came from
                raise EnsembleError(f"{recipe.source or 'recipe'}: member {n + 1} ({m.name}): store: {err}") from None
        return opened, recipe.weights
    chosen: dict[int, Store] = {}
    for store in stores:
        hits = [i for i, m in enumerate(recipe.members)
                if _same_path(m.model, store.model_path) or _same_path(m.store, str(store.path))]
        if len(hits) != 1:
            what = "no recipe member" if not hits else f"{len(hits)} recipe members"
            raise EnsembleError(f"{store.path} (model {store.model_path}) matches {what}: members are "
                                + ", ".join(f"{m.name} (model {m.model})" for m in recipe.members))
        if hits[0] in chosen:
            raise EnsembleError(f"{chosen[hits[0]].path} and {store.path} are both member {recipe.members[hits[0]].name}")
        chosen[hits[0]] = store
    absent = [m.name for i, m in enumerate(recipe.members) if i not in chosen and m.weight > 0]
    if absent:
        raise EnsembleError(f"no store given for recipe member(s) {', '.join(absent)}")
    order = sorted(chosen)
    return [chosen[i] for i in order], [recipe.members[i].weight for i in order]
