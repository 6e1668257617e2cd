"""Datasets: the manifest format, the real-parts "tweets + emoji" dataset, and the MVSA loaders."""

from mmsent.data.labels import PAIR_TYPES, fuse_labels, pair_type
from mmsent.data.manifest import Example, read_manifest, write_manifest

__all__ = [
    "PAIR_TYPES",
    "Example",
    "fuse_labels",
    "pair_type",
    "read_manifest",
    "write_manifest",
]
