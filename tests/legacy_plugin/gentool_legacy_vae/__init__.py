"""A frozen copy of the example VAE plugin as written for gentool 0.1 (see plugin.py)."""
