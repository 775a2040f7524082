"""gentool-boltzmann: the energy-based models of the course (BM, RBM, DBN, DBM) for gentool."""

__version__ = "0.1.0"
