"""tinymatch: image matching on Tiny ImageNet with triplet-loss embeddings."""

# The one place the version is written: pyproject.toml reads it (`dynamic = ["version"]`), the CLI
# prints it (`tinymatch --version`) and every run records it (`tinymatch.environment`).
__version__ = "0.1.0"
