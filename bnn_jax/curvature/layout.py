"""Static description of a parameter pytree: leaf paths, shapes and the flat (`tree.ravel`) order.

A ``Layout`` is hashable and registered as a static pytree node, so curvature states can carry
it (jit treats it as part of the tree structure, not as data). It ravels and unravels without
closures and maps parameter paths to positions in the flat vector.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax.types import Params

Path = tuple[str, ...]


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def leaf_paths(tree: Params) -> list[Path]:
    """The path of every leaf of ``tree`` as a tuple of strings, in ``jax.tree.leaves`` order,
    e.g. ``("Dense_0", "kernel")``."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [tuple(_key_name(k) for k in path) for path, _ in flat]


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Layout:
    """Tree structure, leaf paths, shapes and dtypes of a (selected) parameter pytree."""

    treedef: Any
    paths: tuple[Path, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    @classmethod
    def of(cls, tree: Params) -> "Layout":
        leaves, treedef = jax.tree.flatten(tree)
        return cls(
            treedef=treedef,
            paths=tuple(leaf_paths(tree)),
            shapes=tuple(tuple(int(d) for d in leaf.shape) for leaf in leaves),
            dtypes=tuple(np.dtype(leaf.dtype) for leaf in leaves),
        )

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def size(self) -> int:
        """Number of scalars ``P``."""
        return sum(self.sizes)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(jnp.result_type(*self.dtypes))

    def leaves_by_path(self, tree: Params) -> dict[Path, jax.Array]:
        return dict(zip(self.paths, jax.tree.leaves(tree), strict=True))

    def from_leaves(self, by_path: dict[Path, jax.Array]) -> Params:
        return jax.tree.unflatten(self.treedef, [by_path[p] for p in self.paths])

    def ravel(self, tree: Params, batch_dims: int = 0) -> jax.Array:
        """Concatenate the leaves into ``[*batch, P]``; ``batch_dims`` leading axes are kept."""
        leaves = jax.tree.leaves(tree)
        if len(leaves) != len(self.paths):
            raise ValueError(
                f"v: expected a pytree with {len(self.paths)} leaves (the selected parameters), "
                f"got {len(leaves)}"
            )
        parts = [leaf.reshape(*leaf.shape[:batch_dims], -1) for leaf in leaves]
        return jnp.concatenate(parts, axis=-1)

    def unravel(self, flat: jax.Array) -> Params:
        """Inverse of ``ravel`` for a flat ``[*batch, P]`` vector (leading axes are kept)."""
        lead = flat.shape[:-1]
        splits = np.cumsum(self.sizes)[:-1].tolist()
        parts = jnp.split(flat, splits, axis=-1)
        leaves = [
            part.reshape(*lead, *shape).astype(dtype)
            for part, shape, dtype in zip(parts, self.shapes, self.dtypes, strict=True)
        ]
        return jax.tree.unflatten(self.treedef, leaves)

    def index_tree(self) -> Params:
        """A tree shaped like the parameters holding each scalar's flat index (numpy int)."""
        return self.unravel_numpy(np.arange(self.size))

    def unravel_numpy(self, flat: np.ndarray) -> Params:
        splits = np.cumsum(self.sizes)[:-1].tolist()
        parts = np.split(flat, splits)
        leaves = [p.reshape(s) for p, s in zip(parts, self.shapes, strict=True)]
        return jax.tree.unflatten(self.treedef, leaves)
