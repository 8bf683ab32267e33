"""``python -m fcnjax.data name=camvid root=/data/CamVid split=train --stats``

Builds the source a data config describes (``key=value`` pairs, parsed as new keys of a
training config's ``data`` section: :func:`fcnjax.config.parse_assignments`), verifies every
example, and prints its size, classes and, with ``--stats``, the pixel counts and
median-frequency-balancing weights per class.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fcnjax.data", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("config", nargs="+", help="data config as key=value (name=..., root=...)")
    parser.add_argument("--stats", action="store_true", help="class pixel counts and MFB weights")
    parser.add_argument("--on-error", default="raise", choices=("raise", "skip"))
    args = parser.parse_args(argv)

    from fcnjax import config as config_lib
    from fcnjax import data

    try:
        config = config_lib.parse_assignments(args.config)
        config.setdefault("on_error", args.on_error)
        config.setdefault("verify", True)
        source = data.get_source(config)
    except data.DataError as e:  # the data itself
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # an argument (the fcnjax command line's status 2)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{config['name']}: {len(source)} examples verified", end="")
    skipped = getattr(source, "skipped", ())
    print(f" ({len(skipped)} skipped)" if skipped else "")
    if source.num_classes is not None:
        names = source.class_names or tuple(str(c) for c in range(source.num_classes))
        print(f"{source.num_classes} classes: {', '.join(names)}")
    if args.stats:
        if not source.has_masks:
            print(f"error: {config['name']} has no masks to count classes of.", file=sys.stderr)
            return 1
        counts = data.class_counts(source)
        weights = data.median_frequency_weights(counts)
        total = counts.pixels.sum() + counts.ignored
        print("| class | pixels | share | median-frequency weight |")
        print("| --- | --- | --- | --- |")
        for c, name in enumerate(names):
            share = counts.pixels[c] / max(total, 1)
            print(f"| {name} | {counts.pixels[c]} | {share:.2%} | {weights[c]:.4f} |")
        ignored = counts.ignored / max(total, 1)
        print(f"| (ignored, {data.IGNORE_LABEL}) | {counts.ignored} | {ignored:.2%} | - |")
        print("weights = " + np.array2string(weights, precision=4, separator=", "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
