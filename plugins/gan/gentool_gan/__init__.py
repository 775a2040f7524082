"""gentool-gan: the vanilla GAN, the conditional GAN and DCGAN as gentool models."""

__version__ = "0.1.0"
