"""gentool-vae: a variational autoencoder plugin for gentool (an example third-party plugin)."""

__version__ = "0.1.0"
