"""Command-line entry point: ``python -m fcnjax`` (or the ``fcnjax`` console script)."""


def main() -> None:
    from fcnjax import _demo

    _demo.main()


if __name__ == "__main__":
    main()
