"""cleaner: prunes Google Container Registry and Artifact Registry repositories on every push."""

__version__ = "0.1.0"
