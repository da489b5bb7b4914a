"""Out-of-distribution inputs shaped like an in-distribution data set.

- ``"patches"``: crops of the two photographs bundled with scikit-learn
  (``load_sample_images``: a Chinese temple and a flower), grey-scale for one-channel data,
  resized to the in-distribution input size and min-max scaled to [0, 1]: the offline stand-in
  for the blog post's photographs-versus-paintings shift. For feature data (``[n, d]``) a crop
  is one image row resampled to length ``d`` and standardised to the training mean and std.
- ``"noise"``: uniform noise in [0, 1] for images; Gaussian noise with the training data's
  per-feature mean and standard deviation for feature data.
- ``"held_out"``: test inputs of the classes the data set was loaded without
  (``load(name, classes=(0, 1, 2, 3, 4))`` -> classes 5..9).
"""

import jax
import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

from bnn_jax.data.dataset import Dataset


def _crop_sizes(key, num: int, side: int, limit: int) -> np.ndarray:
    """Crop side lengths between 2x the target and a quarter of the photo's short side."""
    low = min(2 * side, limit // 4)
    return np.asarray(jax.random.randint(key, (num,), low, limit // 4 + 1))


def photo_patches(num: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """``num`` photo patches of shape ``shape`` (``(h, w, c)`` images or ``(d,)`` features)."""
    photos = [np.asarray(p) for p in load_sample_images().images]
    keys = jax.random.split(jax.random.key(seed), 5)
    which = np.asarray(jax.random.randint(keys[0], (num,), 0, len(photos)))
    short = min(min(p.shape[:2]) for p in photos)
    side = shape[0] if len(shape) == 3 else 1
    sizes = _crop_sizes(keys[1], num, side, short)
    u = np.asarray(jax.random.uniform(keys[2], (num, 2)))
    out = []
    for i in range(num):
        photo, size = photos[which[i]], int(sizes[i])
        top = int(u[i, 0] * (photo.shape[0] - size))
        left = int(u[i, 1] * (photo.shape[1] - size))
        crop = Image.fromarray(photo[top : top + size, left : left + size])
        if len(shape) == 3:
            crop = crop.convert("L") if shape[2] == 1 else crop
            patch = np.asarray(crop.resize(shape[1::-1], Image.BILINEAR), np.float32)
            patch = patch.reshape(shape)
        else:
            row = np.asarray(crop.convert("L"), np.float32)[size // 2]
            patch = np.interp(np.linspace(0, size - 1, shape[0]), np.arange(size), row)
        lo, hi = patch.min(), patch.max()
        out.append((patch - lo) / max(hi - lo, 1e-6))
    return np.stack(out).astype(np.float32)


def make_ood(dataset: Dataset, kind: str, num: int, seed: int) -> np.ndarray:
    """OOD inputs of ``kind`` for ``dataset``; see the module docstring."""
    shape = dataset.input_shape
    if kind == "patches":
        x = photo_patches(num, shape, seed)
        if dataset.is_image:
            return x
        mean, std = dataset.x_train.mean(axis=0), dataset.x_train.std(axis=0)
        z = (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-6)
        return (mean + std * z).astype(np.float32)
    key = jax.random.key(seed)
    if kind == "noise":
        if dataset.is_image:
            return np.asarray(jax.random.uniform(key, (num, *shape)), np.float32)
        mean, std = dataset.x_train.mean(axis=0), dataset.x_train.std(axis=0)
        return (mean + std * np.asarray(jax.random.normal(key, (num, *shape)))).astype(np.float32)
    raise ValueError(f"kind: unknown OOD kind {kind!r}")
