"""Model runners and model pairs."""
