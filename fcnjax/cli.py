"""``fcnjax`` commands. With no command, trains the offline default (the ``shapes_fcn8s`` config).

    fcnjax train --config NAME[:arg] --workdir DIR [--overwrite] [key=value ...]
    fcnjax evaluate --workdir DIR [--split test] [--checkpoint best]
    fcnjax predict --workdir DIR --input FILE_OR_DIR --output DIR [--slide H --tta flip ...]
    fcnjax export --workdir DIR --output FILE [--format onnx] [--size HxW | --dynamic]
    fcnjax verify --config NAME [key=value | --config.key=value ...] [--stats]
    fcnjax verify name=camvid root=/data/CamVid [split=train ...] [--stats]  # a data source
    fcnjax plot --workdir DIR [--output DIR]   # training curves (needs fcnjax[viz])
    fcnjax list [recipes | networks]           # what ships (fcnjax.catalog)

A config is a recipe shipped in :mod:`fcnjax.configs` by name or the path of a config file,
optionally with ``:arg`` (:func:`fcnjax.config.load_config`). Overrides are ``key=value``,
``--config.key=value`` or ``--config.key value`` (``ml_collections.config_flags``' forms),
parsed and type-checked by :func:`fcnjax.config.apply_overrides`. The parser only parses;
everything else is the library (:mod:`fcnjax.train`, :mod:`fcnjax.predict`,
:mod:`fcnjax.catalog`). :func:`main` is the one place where fcnjax's own errors become one
line naming what was wrong and an exit status (``--verbose`` adds the traceback); anything
else keeps its traceback, so that bugs stay visible. The exit statuses (:data:`EXIT_FAILED`,
:data:`EXIT_USAGE`, 128 + a signal's number) end ``fcnjax --help`` (:data:`EPILOG`)."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import re
import signal
import sys
import traceback
from pathlib import Path

from fcnjax import catalog  # the commands that only look (verify, list); imports on demand

__all__ = ["DEFAULT_CONFIG", "EXIT_FAILED", "EXIT_USAGE", "main"]

EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = "shapes_fcn8s"  # configs/, shipped as fcnjax.configs: a wheel runs it
DEFAULT_WORKDIR = "runs/shapes_fcn8s"
DESCRIPTION = f"""\
Train, evaluate and use segmentation networks in JAX. With no command, trains the
offline default recipe ({DEFAULT_CONFIG}) in {DEFAULT_WORKDIR}."""
EPILOG = """\
A config is a shipped recipe by name (fcnjax list recipes shows them), optionally with
:arg (shapes_fcn8s:runlocal), or the path of a config file (my_config.py or my_config.py:arg).
Config overrides follow it: key=value, --config.key=value or --config.key value.

exit status:
  0        done
  1        the run failed on what it met: bad data, an unreadable checkpoint, a NaN loss,
           a full disk, a workdir in use by another run, a missing extra
  2        usage: a bad argument, config, key or value, a missing input, outputs that
           exist or cannot be written
  130/143  stopped by Ctrl-C / SIGTERM (training saves a checkpoint; run it again to resume)"""
CACHE_HELP = """JAX's compiled programs, reused by the next run of the same recipe (default: \
$FCNJAX_CACHE/xla, i.e. ~/.cache/fcnjax/xla; 'off': none)"""
CONFIG_HELP = "a shipped recipe (fcnjax list recipes) or a config .py file; optionally :arg"
TRAIN_EPILOG = """Then config overrides: key=value, --config.key=value or --config.key value. \
The recipes: fcnjax list recipes; the networks (model.name=NAME): fcnjax list networks."""
VERIFY_EPILOG = """With --config (then config overrides), checks the config's training and \
evaluation data; without, the data source key=value pairs describe: name= one of {} and its \
arguments (name=camvid root=/data/CamVid split=train). Exit status 1: an example is bad."""


def _parser() -> argparse.ArgumentParser:
    from fcnjax.data import SOURCES

    raw = argparse.RawDescriptionHelpFormatter  # the epilog's table as it is written
    parser = argparse.ArgumentParser(
        prog="fcnjax", description=DESCRIPTION, epilog=EPILOG, formatter_class=raw
    )
    parser.add_argument("--verbose", action="store_true", help="also print an error's traceback")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, text: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text[0].upper() + text[1:], **kwargs)

    train = add("train", "train and evaluate a config (resumes from --workdir)")
    train.epilog = TRAIN_EPILOG
    train.add_argument("--config", required=True, help=CONFIG_HELP)
    train.add_argument("--workdir", required=True, help="checkpoints, metrics and pictures")
    mine = "replace files in --workdir with a run's output names that fcnjax did not write"
    train.add_argument("--overwrite", action="store_true", help=mine)
    ev = add("evaluate", "FCN metrics of a trained workdir on a split")
    ev.add_argument("--workdir", required=True)
    ev.add_argument("--split", default=None, help="default: the config's evaluation split")
    ev.add_argument("--checkpoint", default="latest", choices=("latest", "best"))
    ev.add_argument("--batch-size", type=_positive_int, default=None)
    _inference_flags(ev)
    pr = add("predict", "masks (class-index, colour and overlay PNGs)")
    pr.add_argument("--workdir", required=True)
    pr.add_argument("--input", required=True, help="an image file or a directory of images")
    pr.add_argument("--output", required=True, help="directory for the PNGs")
    pr.add_argument("--checkpoint", default="latest", choices=("latest", "best"))
    pr.add_argument("--no-overlay", action="store_true")
    pr.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _inference_flags(pr)
    _export_flags(add("export", "a file that runs without fcnjax: StableHLO or ONNX"))
    usage = "%(prog)s [-h] [--stats] (--config CONFIG [overrides] | key=value ...)"
    ve = add("verify", "read every example of a config's data or of a data source", usage=usage)
    ve.epilog = VERIFY_EPILOG.format(", ".join(sorted(SOURCES)))
    ve.add_argument("--config", default=None, help=CONFIG_HELP)
    ve.add_argument("--stats", action="store_true", help="also each class's pixel count and weight")
    pl = add("plot", "training curves of a workdir as PNGs (matplotlib)")
    pl.add_argument("--workdir", required=True)
    pl.add_argument("--output", default=None, help="default: WORKDIR/plots")
    ls = add("list", "the shipped recipes and the networks (with their parameter counts)")
    ls.add_argument("what", nargs="?", choices=("recipes", "networks"), help="default: both")
    for compiles in (train, ev, pr, sub.choices["export"]):
        compiles.add_argument("--compilation-cache", metavar="DIR", help=CACHE_HELP)
    return parser


def _export_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--workdir", required=True)
    add("--output", required=True, help="the file to write")
    add("--format", default="stablehlo", help="stablehlo (default) or onnx")
    add("--size", default=None, help="HxW (default: the run's example size)")
    add("--dynamic", action="store_true", help="symbolic height and width, if the network allows")
    add("--platforms", default="cpu", help="StableHLO: some of cpu,cuda,rocm,tpu")
    add("--probabilities", action="store_true", help="also the probabilities (softmax or sigmoid)")
    add("--threshold", type=float, metavar="P", help="one output: label 1 where sigmoid > P")
    add("--checkpoint", default="latest", choices=("latest", "best"))
    add("--overwrite", action="store_true", help="replace an existing --output")


def _inference_flags(parser: argparse.ArgumentParser) -> None:
    """Sliding windows and test-time augmentation (fcnjax.inference); unset: the config's
    ``inference`` section."""
    g = parser.add_argument_group("inference (default: the inference section of the run's config)")
    g.add_argument("--slide", type=_size, metavar="H[xW]", help="sliding windows of this size")
    g.add_argument("--stride", type=_size, metavar="H[xW]", help="between windows (the window)")
    g.add_argument("--blend", choices=("constant", "gaussian"), help="of overlapping windows")
    g.add_argument("--window-batch", type=_positive_int, help="windows per network call")
    g.add_argument("--tta", choices=("none", "flip"), help="flip: average with the mirror image")
    g.add_argument("--scales", type=_scales, metavar="S,S,...", help="TTA scales, e.g. 0.75,1,1.25")
    g.add_argument("--threshold", type=float, metavar="P", help="one output: 1 where sigmoid > P")


def _inference_options(args: argparse.Namespace) -> dict:
    names = {"slide": "window", "stride": "stride", "blend": "blend", "window_batch": "batch"}
    options = {key: getattr(args, flag) for flag, key in names.items()}
    flip = None if args.tta is None else args.tta == "flip"
    options.update(flip=flip, scales=args.scales, threshold=args.threshold)
    return {k: v for k, v in options.items() if v is not None}


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) not in (1, 2) or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"must be H or HxW, positive integers; got {text!r}")
    return values * (3 - len(values)) if len(values) == 1 else values


def _scales(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"must be positive numbers like 0.75,1,1.25; got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def _overrides(extra: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``key=v``, ``--config.key=v`` or ``--config.key v`` -> ``["key=v", ...]``; the
    values are parsed by :func:`fcnjax.config.apply_overrides`."""
    out, args = [], list(extra)
    while args:
        arg = args.pop(0)
        if arg.startswith("--config.") and "=" not in arg:
            if not args:
                parser.error(f"{arg} needs a value (--config.key=value)")
            out.append(f"{arg.removeprefix('--config.')}={args.pop(0)}")
        elif arg.startswith("--config.") or ("=" in arg and not arg.startswith("-")):
            out.append(arg.removeprefix("--config."))
        else:
            parser.error(
                f"unrecognized argument {arg!r} "
                "(config overrides look like key=value or --config.key=value)"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not [a for a in argv if a != "--verbose"]:  # the offline default job
        argv += ["train", "--config", DEFAULT_CONFIG, "--workdir", DEFAULT_WORKDIR]
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if extra and args.command not in ("train", "verify"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "verify" and args.config is None:  # a data source: key=value pairs
        if not extra or any(arg.startswith("--config.") for arg in extra):
            parser.error("verify needs --config NAME [overrides] or a data source: key=value pairs")
    # Importing fcnjax gave the root logger a plain StreamHandler (absl's basicConfig() when
    # orbax logs at import): it goes, so that fcnjax's lines get our format and INFO level.
    # Other handlers (pytest's capture, a notebook's) stay, and basicConfig leaves them be.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(handler)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    # orbax logs routine notes (read-only managers, items not asked for) as absl warnings.
    logging.getLogger("absl").setLevel(logging.ERROR)
    for noisy in ("orbax", "jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return _run(args, _overrides(extra, parser))
    except KeyboardInterrupt:  # Ctrl-C before training's own handler (start-up, compiling)
        print(f"fcnjax {args.command}: interrupted; nothing was saved.", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as e:  # noqa: BLE001 (turned into a message only if it is ours)
        code, message = _explain(e)
        if code is None:
            raise  # a bug: its traceback stays visible
        if args.verbose:
            traceback.print_exception(e)
        print(f"fcnjax {args.command}: {message}", file=sys.stderr)
        return code


def _explain(error: BaseException) -> tuple[int | None, str]:
    """``(exit status, one line)`` for fcnjax's own errors and the user's files; ``(None,
    ...)`` for anything else."""
    from fcnjax import config as config_lib
    from fcnjax import download, train
    from fcnjax.data import DataError
    from fcnjax.training import checkpoints, workdir

    if isinstance(error, config_lib.ConfigError):
        return EXIT_USAGE, f"config error: {error}"
    if isinstance(error, checkpoints.CheckpointMismatchError):  # the config changed
        return EXIT_USAGE, str(error)
    if isinstance(error, workdir.WorkdirError):
        return EXIT_USAGE, f"--workdir {error.filename}: {error.strerror}."
    failed = (
        checkpoints.CheckpointError,
        DataError,
        download.DownloadError,  # offline, or the server refused: names the URL
        train.NonFiniteLossError,
        workdir.WorkdirBusyError,
        ImportError,
    )
    if isinstance(error, failed):
        return EXIT_FAILED, str(error)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" for {error.filename}" if error.filename else ""
        return EXIT_FAILED, f"no space left on the device{where}: {error.strerror}."
    if isinstance(error, OSError) and error.errno == errno.EROFS:
        return EXIT_USAGE, f"{error.filename or ''}: not writable ({error.strerror})."
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM):
        return EXIT_USAGE, f"{error.filename or ''}: permission denied ({error.strerror})."
    usage = (FileNotFoundError, NotADirectoryError, FileExistsError, IsADirectoryError)
    if isinstance(error, (*usage, ValueError, TypeError)):  # also a model's or source's
        return EXIT_USAGE, str(error)  # own argument checks
    return None, ""


def _run(args, overrides: list[str]) -> int:
    if hasattr(args, "compilation_cache"):  # the commands that compile (_parser gives them it)
        from fcnjax.training import runtime

        runtime.command_line_cache(args.compilation_cache)
    commands = {
        "plot": lambda: _plot(args.workdir, args.output),
        "verify": lambda: catalog.verify(args.config, overrides, stats=args.stats),
        "list": lambda: catalog.print_listing(args.what),
        "train": lambda: _train(args, overrides),
        "evaluate": lambda: _evaluate(args),
        "predict": lambda: _predict(args),
        "export": lambda: _export(args),
    }
    return commands[args.command]()


def _train(args, overrides: list[str]) -> int:
    from fcnjax import config as config_lib
    from fcnjax import train
    from fcnjax.training import summary

    config = config_lib.load_config(args.config, overrides)
    result = train.train_and_evaluate(config, args.workdir, overwrite=args.overwrite)
    step, at = result["step"], result["eval_step"]
    if result["eval"]:
        title = f"validation @ step {at}" + (f" (training stopped at {step})" * (at != step))
        print(summary.format_table(result["eval"], title))
    stopped = result["interrupted"]
    print(
        f"step {step} in {result['seconds']:.1f} s; workdir {result['workdir']}"
        + (f" (stopped by {stopped}; run again to resume)" if stopped else "")
    )
    return 128 + signal.Signals[stopped] if stopped else 0


def _evaluate(args) -> int:
    from fcnjax import predict
    from fcnjax.training import summary, workdir

    results = predict.evaluate_segmentation(
        args.workdir,
        split=args.split,
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
        inference=_inference_options(args),
        progress=True,
    )
    print(summary.format_table(results, f"{args.split or 'evaluation'} @ step {results['step']}"))
    # A split is no file name: a folder source's "sub/dir", TFDS's "train[:10%]".
    split = re.sub(r"[^A-Za-z0-9._-]", "_", str(results.get("split") or "default"))
    text = json.dumps(results, indent=2, default=str)
    workdir.write_text(args.workdir, f"eval_{split}.json", text)  # recorded as fcnjax's
    return 0


def _predict(args) -> int:
    import numpy as np

    from fcnjax import predict
    from fcnjax.data import DataError
    from fcnjax.data.images import read_image
    from fcnjax.training import workdir

    files = predict.image_files(args.input, "--input")
    plan = predict.plan_outputs(files, args.output, not args.no_overlay, args.overwrite)
    predictor = predict.load(args.workdir, args.checkpoint, inference=_inference_options(args))
    predictor.progress = True
    done = 0
    try:
        for path, out in plan.items():
            image = read_image(path, channels=predictor.channels)
            mask = predictor(image)  # Ctrl-C stops it at once; below it waits for the files
            with workdir.interrupts_deferred():
                predict.save_prediction(
                    mask, image, out, not args.no_overlay, overwrite=args.overwrite
                )
                done += 1
            counts = {int(k): int(v) for k, v in zip(*np.unique(mask, return_counts=True))}
            print(f"{path} -> {out} (pixels per class: {counts})")
    except (KeyboardInterrupt, DataError) as e:  # an image's files: all or none (predict)
        files = len(predict.output_files("x.png", not args.no_overlay))
        written = (
            f"{done} of {len(plan)} images were predicted "
            f"({done * files} files in {args.output}), the rest were not"
        )
        if isinstance(e, DataError):  # a file cut off in its pixels: only decoding finds it
            raise DataError(f"{e} {written[0].upper()}{written[1:]}.") from e
        print(f"fcnjax predict: interrupted; {written}.", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


def _export(args) -> int:
    from fcnjax import export

    path = export.export(
        args.workdir,
        args.output,
        format=args.format,
        size=args.size,
        dynamic=args.dynamic,
        platforms=args.platforms,
        probabilities=args.probabilities,
        threshold=args.threshold,
        checkpoint=args.checkpoint,
        overwrite=args.overwrite,
    )
    print(f"{path} ({path.stat().st_size / 2**20:.2f} MiB)")
    return 0


def _plot(workdir: str, output: str | None) -> int:
    from fcnjax import viz

    if not Path(workdir).is_dir():
        raise NotADirectoryError(f"--workdir {workdir}: no such directory.")
    for path in viz.plot_metrics(workdir, output):
        print(path)
    return 0
