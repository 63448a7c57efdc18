"""``python -m effdet JOB ...`` = the ``effdet`` command (also ``torchrun -m effdet train ...``)."""

from effdet.cli.main import console

if __name__ == "__main__":
    console()
