"""Restricting a curvature estimate to a subset of the parameters (e.g. the last layer).

A ``Subset`` selects leaves of the parameter pytree by a predicate on their path (a tuple of
strings such as ``("Dense_2", "kernel")``). The selected tree keeps the structure of ``params``
with unselected leaves replaced by ``None`` (an empty pytree node), so ``jax.tree.map``,
``tree.ravel`` and ``tree.normal_like`` see only the selected leaves, in ``params`` order.

Example:
  >>> sub = subset.last_layer(apply_fn, params, x[:1])
  >>> theta = sub.select(params)                       # only the last Dense kernel and bias
  >>> params_t = sub.merge(params, tree.tree_add(theta, z))   # z from curvature.sample
"""

from collections.abc import Callable
from typing import NamedTuple

import jax

from bnn_jax.curvature.capture import find_layers
from bnn_jax.curvature.layout import Path, leaf_paths
from bnn_jax.types import ApplyFn, Params

__all__ = ["Subset", "complement", "everything", "last_layer", "modules", "where"]


class Subset(NamedTuple):
    """A parameter selection.

    Attributes:
      select: ``params -> selected`` (unselected leaves replaced by ``None``); raises
        ``ValueError`` if nothing matches.
      merge: ``(params, selected) -> params`` with the selected leaves replaced.
      contains: ``path -> bool``, the predicate.
    """

    select: Callable[[Params], Params]
    merge: Callable[[Params, Params], Params]
    contains: Callable[[Path], bool]


def where(predicate: Callable[[Path], bool], *, description: str = "predicate") -> Subset:
    """Select the leaves whose path satisfies ``predicate``.

    Args:
      predicate: ``path -> bool`` with ``path`` a tuple of strings, e.g.
        ``lambda p: p[0] == "Dense_2"``.
      description: shown in the error raised when nothing matches.
    """

    def mask(params: Params) -> list[bool]:
        selected = [bool(predicate(p)) for p in leaf_paths(params)]
        if not any(selected):
            raise ValueError(f"subset: no parameter matches {description}")
        return selected

    def select(params: Params) -> Params:
        leaves, treedef = jax.tree.flatten(params)
        keep = mask(params)
        return jax.tree.unflatten(
            treedef, [x if k else None for x, k in zip(leaves, keep, strict=True)]
        )

    def merge(params: Params, selected: Params) -> Params:
        leaves, treedef = jax.tree.flatten(params)
        keep = mask(params)
        new = jax.tree.leaves(selected)
        if len(new) != sum(keep):
            raise ValueError(
                f"selected: expected {sum(keep)} leaves (the selected parameters), got {len(new)}"
            )
        it = iter(new)
        return jax.tree.unflatten(
            treedef, [next(it) if k else x for x, k in zip(leaves, keep, strict=True)]
        )

    return Subset(select, merge, lambda path: bool(predicate(path)))


def everything() -> Subset:
    """All parameters (the default of every curvature factory)."""
    return where(lambda path: True, description="all parameters")


def complement(other: Subset) -> Subset:
    """Every parameter ``other`` does not select, e.g. ``complement(last_layer(...))`` for
    "everything but the last layer" (the other part of a ``curvature.partition``)."""
    return where(lambda path: not other.contains(path), description="the complement of a subset")


def modules(*module_paths: Path) -> Subset:
    """The parameters of the given modules, e.g. ``modules(("Dense_2",), ("BatchNorm_0",))``:
    every leaf whose path minus its last entry equals one of ``module_paths``."""
    wanted = {tuple(p) for p in module_paths}
    return where(lambda path: tuple(path[:-1]) in wanted, description=f"modules {sorted(wanted)}")


def last_layer(apply_fn: ApplyFn, params: Params, x: jax.Array) -> Subset:
    """The kernel and bias of the last ``nn.Dense``/``nn.Conv`` called by ``apply_fn`` on
    inputs like ``x`` (only shapes are traced; ``x[:1]`` is enough)."""
    layers = find_layers(apply_fn, params, x)
    if not layers:
        raise ValueError("apply_fn: the model calls no nn.Dense/nn.Conv layer; no last layer")
    return modules(layers[-1].path)
