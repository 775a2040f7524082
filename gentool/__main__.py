"""``python -m gentool`` (also what ``torchrun -m gentool train ...`` runs)."""

from gentool.cli import main

if __name__ == "__main__":
    main()
