"""Data sets for the trainers: image folders, zip archives, .npz/.npy arrays and the embedded digits set.

``open_dataset(spec, resolution)`` -> a Dataset whose items are ``(image (C, R, R) float32 in [-1, 1], label int)``
(label -1 when unlabelled), with ``.num_classes``, ``.channels``, ``.resolution``. ``InfiniteLoader`` yields
batches in an order fixed by (seed, batch index), sharded over DDP ranks, so a resumed or distributed run sees the
same images as an uninterrupted single-process one.
"""
from .datasets import ArrayDataset, FileDataset, digits, open_dataset  # noqa: F401
from .loader import InfiniteLoader, flip  # noqa: F401

__all__ = ["ArrayDataset", "FileDataset", "digits", "open_dataset", "InfiniteLoader", "flip"]
