"""tinymatch: image matching on Tiny ImageNet with triplet-loss embeddings."""

__version__ = "0.1.0"
