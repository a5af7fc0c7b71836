"""``python -m ddmini ...``: the same command line as ``ddmini ...``."""

from .cli import main

if __name__ == "__main__":
    main()
