"""gentool's version, in a module of its own: the package's ``__init__`` hands it on, and the modules
below the facade (a checkpoint records it) read it here without importing the facade."""

__version__ = "0.1.0"
