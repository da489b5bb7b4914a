"""Image classification data sets from TensorFlow Datasets, read through ``tfds.data_source``.

``tfds.data_source`` reads prepared ``array_record`` files without TensorFlow. Nothing is
downloaded at run time: a data set that is not prepared under ``data_dir`` raises a
``FileNotFoundError`` that says how to prepare it on a machine with internet access.

``load_tfds(..., lazy=True)`` keeps the images in the data source: the inputs are
:class:`RecordImages`, read-only arrays that decode the records they are indexed with, so a
process of a multi-process run that iterates ``Batches(..., process_index=, process_count=)``
decodes and holds only its share of each batch. The labels (needed for the stratified
validation split) are read eagerly; without TensorFlow, tfds cannot skip the image while
decoding a record, so reading them decodes every record once.
"""

from typing import Any

import numpy as np

from bnn_jax.data.dataset import stratified_split

TFDS_DATASETS = {"mnist": 10, "fashion_mnist": 10, "kmnist": 10, "cifar10": 10, "svhn_cropped": 10}
"""Supported tfds names and their number of classes."""
VAL_FRACTION = 0.1


def _prepare_hint(name: str, data_dir) -> str:
    where = data_dir or "~/tensorflow_datasets"
    return (
        f"tfds data set {name!r} is not prepared in {where} (no download happens at run time). "
        "On a machine with internet access run\n"
        f"  python -c \"import tensorflow_datasets as tfds; tfds.data_source('{name}', "
        "download_and_prepare_kwargs={'file_format': 'array_record'})\"\n"
        f"and copy the resulting folder {name}/ into {where} (or pass data_dir=)."
    )


def _image(record) -> np.ndarray:
    return np.asarray(record["image"], np.float32) / 255.0


class RecordImages:
    """Images ``[n, H, W, C]`` (float32 in [0, 1]) of a tfds data source, decoded on access.

    Supports ``len``, ``shape``, ``dtype``, ``ndim``; indexing with an integer, a slice, an
    integer or boolean array returns numpy (only those records are read); ``take(indices,
    axis=0)`` returns another lazy view (as ``numpy.take`` returns a copy); ``np.asarray``
    decodes everything.
    """

    def __init__(self, source: Any, indices: np.ndarray, image_shape: tuple[int, ...]):
        self.source, self.indices = source, np.asarray(indices, np.int64)
        self.shape = (len(self.indices), *image_shape)
        self.dtype, self.ndim = np.dtype(np.float32), 1 + len(image_shape)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, int | np.integer):
            return _image(self.source[int(self.indices[index])])
        rows = self.indices[index]
        images = np.empty((len(rows), *self.shape[1:]), np.float32)
        for i, row in enumerate(rows):
            images[i] = _image(self.source[int(row)])
        return images

    def take(self, indices, axis: int = 0) -> "RecordImages":
        if axis != 0:
            raise ValueError(f"axis: expected 0 (rows of the data set), got {axis}")
        return RecordImages(self.source, self.indices[np.asarray(indices)], self.shape[1:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        del copy
        images = self[np.arange(len(self))]
        return images if dtype is None else images.astype(dtype)


def _open(name: str, split: str, data_dir):
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        first = source[0] if len(source) else None
    # a data set missing from the default folder is a KeyError on its (empty) splits
    except (FileNotFoundError, NotImplementedError, AssertionError, OSError, KeyError) as err:
        raise FileNotFoundError(_prepare_hint(name, data_dir)) from err
    return source, first


def _read_split(name: str, split: str, data_dir, lazy: bool):
    source, first = _open(name, split, data_dir)
    labels, images = np.empty(len(source), np.int32), []
    for i in range(len(source)):
        record = first if i == 0 else source[i]
        labels[i] = record["label"]
        if not lazy:
            images.append(_image(record))
    if lazy:
        shape = np.shape(first["image"]) if first is not None else ()
        return RecordImages(source, np.arange(len(source)), shape), labels
    return np.stack(images), labels


def load_tfds(name: str, seed: int, data_dir=None, *, lazy: bool = False):
    """``(train, val, test)`` pairs of NHWC float32 images in [0, 1] and int32 labels; the
    validation split is a stratified 10% of tfds' ``train`` split. With ``lazy`` the images are
    :class:`RecordImages` (decoded when indexed), the labels numpy."""
    x, y = _read_split(name, "train", data_dir, lazy)
    test = _read_split(name, "test", data_dir, lazy)
    train, val = stratified_split(y, (1 - VAL_FRACTION, VAL_FRACTION), seed)
    return (x.take(train, axis=0), y[train]), (x.take(val, axis=0), y[val]), test
