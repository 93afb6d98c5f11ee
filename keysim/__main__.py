"""``python -m keysim``: the same as the ``keysim`` console script."""

from keysim.cli import run

if __name__ == "__main__":
    run()
