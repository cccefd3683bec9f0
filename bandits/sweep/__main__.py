"""``python -m bandits.sweep``: the bandit command line, :func:`bandits.cli.main`."""

from bandits.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
