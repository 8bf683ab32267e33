"""``fcnjax`` commands. With no command, trains the offline default (the ``shapes_fcn8s`` config).

    fcnjax train --config NAME[:arg] --workdir DIR [--config.key=value ...]
    fcnjax evaluate --workdir DIR [--split test] [--checkpoint best]
    fcnjax predict --workdir DIR --input FILE_OR_DIR --output DIR
    fcnjax verify --config NAME [--config.key=value ...]
    fcnjax plot --workdir DIR [--output DIR]   # training curves (needs fcnjax[viz])
    fcnjax demo      # the transposed-convolution op demo

A config is a recipe shipped in :mod:`fcnjax.configs` by name (``shapes_fcn8s``) or the
path of a config file (``path/to/my_config.py:arg``); :func:`fcnjax.config.load_config`
resolves both. The parser only parses; everything else is the library (:mod:`fcnjax.train`,
:mod:`fcnjax.predict`). Errors in what the user gave (a config key, a file, a checkpoint)
print one message naming it and exit with status 2 (usage) or 1 (data, checkpoint).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["DEFAULT_CONFIG", "main"]

DEFAULT_CONFIG = "shapes_fcn8s"  # in fcnjax/configs, so an installed wheel runs it
DEFAULT_WORKDIR = "runs/shapes_fcn8s"
CONFIG_HELP = "a shipped config (shapes_fcn8s, cae_mnist, ...) or a .py file; optionally :arg"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcnjax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    train = sub.add_parser("train", help="train and evaluate a config (resumes from --workdir)")
    train.add_argument("--config", required=True, help=CONFIG_HELP)
    train.add_argument("--workdir", required=True, help="checkpoints, metrics and pictures")
    ev = sub.add_parser("evaluate", help="FCN metrics of a trained workdir on a split")
    ev.add_argument("--workdir", required=True)
    ev.add_argument("--split", default=None, help="default: the config's evaluation split")
    ev.add_argument("--checkpoint", default="latest", choices=("latest", "best"))
    ev.add_argument("--batch-size", type=int, default=None)
    pr = sub.add_parser("predict", help="masks (class-index, colour and overlay PNGs)")
    pr.add_argument("--workdir", required=True)
    pr.add_argument("--input", required=True, help="an image file or a directory of images")
    pr.add_argument("--output", required=True, help="directory for the PNGs")
    pr.add_argument("--checkpoint", default="latest", choices=("latest", "best"))
    pr.add_argument("--no-overlay", action="store_true")
    ve = sub.add_parser("verify", help="check a config's datasets (every example)")
    ve.add_argument("--config", required=True, help=CONFIG_HELP)
    pl = sub.add_parser("plot", help="training curves of a workdir as PNGs (matplotlib)")
    pl.add_argument("--workdir", required=True)
    pl.add_argument("--output", default=None, help="default: WORKDIR/plots")
    sub.add_parser("demo", help="the transposed-convolution op demo")
    return parser


def _overrides(extra: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--config.a.b=v`` or ``--config.a.b v`` -> ``["a.b=v", ...]``."""
    out, i = [], 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--config."):
            parser.error(
                f"unrecognized argument {arg!r} (config overrides look like --config.key=value)"
            )
        key = arg[len("--config.") :]
        if "=" in key:
            out.append(key)
        elif i + 1 < len(extra):
            out.append(f"{key}={extra[i + 1]}")
            i += 1
        else:
            parser.error(f"{arg} needs a value")
        i += 1
    return out


def _load(spec: str, overrides: list[str]):
    from fcnjax import config as config_lib

    config = config_lib.load_config(spec)
    config_lib.apply_overrides(config, overrides)
    return config


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv:  # the offline default job
        argv = ["train", "--config", DEFAULT_CONFIG, "--workdir", DEFAULT_WORKDIR]
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra and args.command not in ("train", "verify"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # orbax logs routine notes (read-only managers, items not asked for) as absl warnings.
    logging.getLogger("absl").setLevel(logging.ERROR)
    for noisy in ("orbax", "jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from fcnjax import checkpoints
    from fcnjax import config as config_lib
    from fcnjax.data import DataError

    try:
        return _run(args, _overrides(extra, parser))
    except config_lib.ConfigError as e:
        print(f"fcnjax {args.command}: config error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError) as e:
        print(f"fcnjax {args.command}: {e}", file=sys.stderr)
        return 2
    except (checkpoints.CheckpointError, DataError) as e:
        print(f"fcnjax {args.command}: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as e:  # a model's or source's own argument check
        print(f"fcnjax {args.command}: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional extra (matplotlib for plot)
        print(f"fcnjax {args.command}: {e}", file=sys.stderr)
        return 1


def _run(args, overrides: list[str]) -> int:
    from fcnjax import summary

    if args.command == "demo":
        from fcnjax import _demo

        _demo.main()
        return 0
    if args.command == "plot":
        from fcnjax import viz

        if not Path(args.workdir).is_dir():
            raise NotADirectoryError(f"--workdir {args.workdir}: no such directory.")
        for path in viz.plot_metrics(args.workdir, args.output):
            print(path)
        return 0
    if args.command == "verify":
        from fcnjax import data, train

        config = _load(args.config, overrides)
        for name, cfg in (
            ("data", config.data.to_dict()),
            ("eval_data", train._eval_data_config(config)),
        ):
            if cfg is None:
                continue
            source = data.get_source({**cfg, "verify": False})
            checked = data.verify(source, on_error="skip")
            skipped = getattr(checked, "skipped", [])
            print(f"{name}: {type(source).__name__}, {len(source)} examples, {len(skipped)} bad")
            for problem in skipped:
                print(f"  {problem}")
            if skipped:
                return 1
        return 0
    if args.command == "train":
        from fcnjax import train

        config = _load(args.config, overrides)
        result = train.train_and_evaluate(config, args.workdir)
        if result["eval"]:
            print(summary.format_table(result["eval"], f"validation @ step {result['step']}"))
        print(
            f"step {result['step']} in {result['seconds']:.1f} s; workdir {result['workdir']}"
            + (
                f" (stopped by {result['interrupted']}; run again to resume)"
                if result["interrupted"]
                else ""
            )
        )
        return 0
    from fcnjax import predict

    if args.command == "evaluate":
        results = predict.evaluate_segmentation(
            args.workdir, split=args.split, checkpoint=args.checkpoint, batch_size=args.batch_size
        )
        print(
            summary.format_table(results, f"{args.split or 'evaluation'} @ step {results['step']}")
        )
        out = Path(args.workdir) / f"eval_{results.get('split') or 'default'}.json"
        out.write_text(json.dumps(results, indent=2, default=str))
        return 0
    # predict
    import numpy as np

    predictor = predict.load(args.workdir, args.checkpoint)
    files = predict.image_files(args.input, "--input")
    out_dir = Path(args.output)
    for path in files:
        mask = predict.predict_segmentation(
            predictor, path, out_dir / f"{path.stem}.png", overlay=not args.no_overlay
        )
        counts = {int(k): int(v) for k, v in zip(*np.unique(mask, return_counts=True))}
        print(f"{path} -> {out_dir / (path.stem + '.png')} (pixels per class: {counts})")
    return 0
