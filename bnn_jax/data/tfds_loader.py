"""Image classification data sets from TensorFlow Datasets, read through ``tfds.data_source``.

``tfds.data_source`` reads prepared ``array_record`` files without TensorFlow. Nothing is
downloaded at run time: a data set that is not prepared under ``data_dir`` raises a
``FileNotFoundError`` that says how to prepare it on a machine with internet access.
"""

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


def _read_split(name: str, split: str, data_dir) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        records = [source[i] for i in range(len(source))]
    # a data set missing from the default folder is a KeyError on its (empty) splits
    except (FileNotFoundError, NotImplementedError, AssertionError, OSError, KeyError) as err:
        raise FileNotFoundError(_prepare_hint(name, data_dir)) from err
    images = np.stack([np.asarray(r["image"]) for r in records])
    labels = np.asarray([r["label"] for r in records], dtype=np.int32)
    return (images.astype(np.float32) / 255.0), labels


def load_tfds(name: str, seed: int, data_dir=None):
    """``(train, val, test)`` pairs of NHWC float32 images in [0, 1] and int32 labels; the
    validation split is a stratified 10% of tfds' ``train`` split."""
    x, y = _read_split(name, "train", data_dir)
    test = _read_split(name, "test", data_dir)
    train, val = stratified_split(y, (1 - VAL_FRACTION, VAL_FRACTION), seed)
    return (x[train], y[train]), (x[val], y[val]), test
