"""Dataset recipes and the built-in demo corpus."""
