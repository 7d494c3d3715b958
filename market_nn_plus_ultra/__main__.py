"""``python -m market_nn_plus_ultra`` — the same CLI as ``plus-ultra``."""

from market_nn_plus_ultra.cli.main import main

if __name__ == "__main__":
    main()
