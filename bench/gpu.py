"""The GPU benchmark's driver (``bench/gpu.sh`` runs it): offline install, device and
versions, the whole training loop's images/s, and the one results file.

    python bench/gpu.py install bench/wheels       # fcnjax from this tree, pip --no-index
    python bench/gpu.py env OUT/env.json           # device names and versions
    python bench/gpu.py loop OUT/loop.json         # `fcnjax train` images/s, data included
    python bench/gpu.py report OUT                 # OUT/results.md from OUT's JSON files

``install`` needs the standard library only (it runs before fcnjax imports).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the benchmarks import: fcnjax's modules and the dependencies they pull in (a
# training run's summary writer imports tensorboardX when it starts).
IMPORTS = (
    "import fcnjax.cli, fcnjax.config, fcnjax.data, fcnjax.models, fcnjax.training.experiment, "
    "fcnjax.training.loop, tensorboardX; print(fcnjax.__file__)"
)
VERSIONS = (
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda13-plugin",
    "flax",
    "optax",
    "orbax-checkpoint",
    "numpy",
    "torch",
    "onnxruntime",
    "onnxruntime-gpu",
    "grain",
    "ml-collections",
    "tensorflow-datasets",
    "fcnjax",
)
CONV_METHODS = ("dilated", "zero_insert", "subpixel")  # what select_method chooses among


# --- install -------------------------------------------------------------------------------


def fcnjax_here() -> bool:
    """Whether fcnjax imports, with what the benchmarks need, from this tree (not from an
    older copy), in a fresh interpreter outside the tree."""
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run(
            [sys.executable, "-c", IMPORTS], cwd=cwd, capture_output=True, text=True
        )
    if done.returncode != 0:
        print(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no fcnjax")
        return False
    where = Path(done.stdout.strip().splitlines()[-1]).resolve()
    if not where.is_relative_to(ROOT):
        print(f"fcnjax imports from {where}, not from {ROOT}")
        return False
    return True


def dist_name(wheel: Path) -> str:
    """A wheel's distribution name, normalised (PEP 503)."""
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def pip(*args: str) -> int:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("$", " ".join(cmd), flush=True)
    # The benchmark machine's Python may be the system's (PEP 668): installing into it is
    # the point here. Older pips ignore the variable.
    env = dict(os.environ, PIP_BREAK_SYSTEM_PACKAGES="1")
    return subprocess.run(cmd, env=env).returncode


def install(args) -> int:
    """fcnjax (editable, from this tree) with pip --no-index --find-links WHEELS: its
    dependencies resolved from the folder; failing that (a wheel missing), every wheel of
    the folder whose package is not installed, then fcnjax, both --no-deps."""
    if fcnjax_here():
        print(f"fcnjax imports from {ROOT}: nothing to install")
        return 0
    wheels = Path(args.wheels).resolve()
    offline = ("--no-index", "--find-links", str(wheels))
    if pip(*offline, "-e", str(ROOT)) != 0:
        missing = sorted(str(w) for w in wheels.glob("*.whl") if not installed(dist_name(w)))
        print(f"resolving failed; installing {len(missing)} wheels of {wheels} --no-deps")
        if missing:
            pip(*offline, "--no-deps", *missing)
        if pip(*offline, "--no-deps", "-e", str(ROOT)) != 0:
            pip(*offline, "--no-deps", "--no-build-isolation", "-e", str(ROOT))
    subprocess.run([sys.executable, "-m", "pip", "check"])  # what is still missing, if any
    if not fcnjax_here():
        print("fcnjax still does not import: add the missing wheels to the folder")
        return 1
    return 0


# --- env -------------------------------------------------------------------------------------


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def env(args) -> int:
    """Device names and versions, as JSON."""
    import jax  # first: its GPU start loads the CUDA libraries both frameworks use

    devices = jax.devices()
    info = dict(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        host=socket.gethostname(),
        python=platform.python_version(),
        machine=platform.machine(),
        cpus=os.cpu_count(),
        jax_backend=jax.default_backend(),
        jax_device=devices[0].device_kind,
        jax_devices=len(devices),
        versions={n: v for n in VERSIONS if (v := version(n))},
        environment={
            k: v for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_", "CUDA_VIS"))
        },
        commit=git("rev-parse", "--short", "HEAD"),
        changed_files=len(git("status", "--porcelain").splitlines()),
    )
    import torch

    info["torch_device"] = "cpu"
    if torch.cuda.is_available():
        info["torch_device"] = torch.cuda.get_device_name()
        info["torch_cuda"] = torch.version.cuda
        info["torch_cudnn"] = torch.backends.cudnn.version()
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,driver_version,memory.total"
        done = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True
        )
        info["nvidia_smi"] = done.stdout.strip()
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    Path(args.json).write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))
    return 0


# --- loop ------------------------------------------------------------------------------------


def train_records(metrics: Path) -> list[tuple[int, float]]:
    """``(step, time)`` of the training lines of a workdir's ``metrics.jsonl``."""
    if not metrics.exists():
        return []
    records = []
    for line in metrics.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if "train/loss" in record:
            records.append((record["step"], record["time"]))
    return records


def loop_rate(records, batch_size) -> dict | None:
    """Images/s between the first and the last logged training step: the first log's time
    includes compilation, so it only opens the interval."""
    if len(records) < 2:
        return None
    (s0, t0), (s1, t1) = records[0], records[-1]
    if t1 <= t0 or s1 <= s0:
        return None
    return dict(
        images_per_s=(s1 - s0) * batch_size / (t1 - t0),
        steps=s1 - s0,
        seconds=t1 - t0,
        from_step=s0,
    )


def loop(args) -> int:
    """``fcnjax train`` on a recipe until ``--seconds`` of logged steps (then SIGTERM: the
    run saves and stops); its images/s from ``metrics.jsonl``, data pipeline included."""
    out = Path(args.json)
    work = Path(tempfile.mkdtemp(prefix="fcnjax-loop-"))
    cmd = [
        *(sys.executable, "-m", "fcnjax", "train", "--config", args.config),
        *("--workdir", str(work / "run"), "--compilation-cache", "off", *args.set),
    ]
    print("$", " ".join(cmd), flush=True)
    shown = " ".join(["fcnjax train --config", args.config, *args.set])
    start = time.monotonic()
    proc = subprocess.Popen(cmd)
    metrics, records, stopped = work / "run" / "metrics.jsonl", [], False
    try:
        while proc.poll() is None and time.monotonic() - start < args.timeout:
            time.sleep(0.5)
            records = train_records(metrics)
            if len(records) >= 2 and records[-1][1] - records[0][1] >= args.seconds:
                stopped = True
                break
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # fcnjax saves and returns at the next step
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
        records = train_records(metrics)
        config = json.loads((work / "run" / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        print(f"no run to read: {error}")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rate = loop_rate(records, config["batch_size"])
    result = dict(
        command=shown,
        config=args.config,
        batch_size=config["batch_size"],
        dtype=config.get("dtype"),
        returncode=proc.returncode,
        stopped_after_seconds=stopped,
        wall_s=time.monotonic() - start,
        **(rate or {}),
    )
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if rate else 1


# --- report ----------------------------------------------------------------------------------


def num(x) -> str:
    """A measurement with three significant figures, without exponents."""
    if x is None:
        return "-"
    x = float(x)
    return (
        f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"
    )


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def stages(out: Path) -> dict[str, list[str]]:
    """``stages.tsv`` (gpu.sh): stage -> [exit code, seconds, time limit]."""
    path = out / "stages.tsv"
    if not path.exists():
        return {}
    return {f[0]: f[1:] for f in (line.split("\t") for line in path.read_text().splitlines())}


def train_section(out, dtype, families, ran) -> list[str]:
    data = load(out / f"train-{dtype}.json")
    rows_by = {r["family"]: r for r in (data or {}).get("rows", [])}
    meta = (data or {}).get("meta", {})
    title = meta.get("precision", dtype)
    lines = [f"## Training step, fcnjax against PyTorch: {title}", ""]
    if meta:
        lines += [
            f"JAX on {meta['device_kind']}, PyTorch on {meta['torch_device']} (a worker "
            f"process); jax {meta['jax']}, torch {meta['torch']}; medians over rounds of "
            "consecutive steps on one fixed batch, each step waited for (compile excluded).",
            "",
        ]
    header = (
        "family",
        "batch",
        "fcnjax ms/step",
        "PyTorch ms/step",
        "fcnjax / PyTorch",
        "fcnjax images/s",
        "PyTorch images/s",
        "compile + 1st call (s)",
    )
    rows = []
    for name in families:
        r = rows_by.get(name)
        if r is None or "fcnjax_ms" not in r:
            if r is not None:
                why = r.get("error") or f"skipped: {r.get('skipped')}"
            elif name not in ran:
                why = "not run (--smoke)"
            else:
                why = f"not reached (stage: {stages(out).get('train-' + dtype, ['?'])[0]})"
            rows.append((name, why.replace("|", "/").splitlines()[0], *["-"] * 6))
            continue
        batch = r["title"].rsplit("batch ", 1)[-1].split(",")[0]
        torch_ips = r["batch"] / r["torch_ms"] * 1e3 if "torch_ms" in r else None
        rows.append(
            (
                name,
                batch,
                num(r["fcnjax_ms"]),
                num(r.get("torch_ms")),
                f"{r['ratio']:.2f}x" if "ratio" in r else "-",
                num(r["batch"] / r["fcnjax_ms"] * 1e3),
                num(torch_ips),
                num(r["compile_s"]),
            )
        )
    return lines + table(header, rows) + [""]


def conv_section(out, dtype) -> tuple[list[str], list[tuple]]:
    """The conv_transpose table of ``dtype`` and its rows' fastest methods."""
    data = load(out / f"conv-{dtype}.json")
    lines = [f"## conv_transpose, {dtype} (ms, medians; bench/conv_transpose.py)", ""]
    if not data or not data.get("rows"):
        return lines + [f"no measurements (stage: {stages(out).get('conv-' + dtype)})", ""], []
    methods = data["methods"]
    header = ("shape (N, H, Cin->Cout, k, s)", "pass", *methods, "fastest method", "auto picks")
    rows, fastest = [], []
    for r in data["rows"]:
        shape, ms = tuple(r["shape"]), r["ms"]
        best = min(CONV_METHODS, key=ms.__getitem__)
        rows.append((shape, r["pass"], *(num(ms[m]) for m in methods), best, r["auto"]))
        fastest.append((shape, dtype, r["pass"], best, ms, r["auto"]))
    lines += table(header, rows) + [""]
    if "auto_over_torch" in data:
        a = data["auto_over_torch"]
        lines.append(
            f"auto / torch, geometric mean: forward {a['fwd']:.2f}x, forward+backward "
            f"{a['fwd_bwd']:.2f}x, worst {a['worst']:.2f}x; flax / auto (forward+backward): "
            f"{data['flax_over_auto']:.1f}x."
        )
    if "fcn32s_upsampler_compile_s" in data:
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in data["fcn32s_upsampler_compile_s"].items())
        lines.append(f"FCN-32s upsampler (64x64 kernel, stride 32), compile + first call: {parts}.")
    return lines + [""], fastest


def fastest_section(fastest) -> list[str]:
    lines = [
        "## Fastest conv_transpose method per shape",
        "",
        "For `fcnjax.ops.select_method`'s rule on this backend (it picks among "
        + ", ".join(CONV_METHODS)
        + "); each method's time over the fastest's.",
        "",
    ]
    header = ("shape", "dtype", "pass", "fastest", "ms", *CONV_METHODS, "auto picks")
    rows = []
    for shape, dtype, kind, best, ms, auto in fastest:
        rel = (f"{ms[m] / ms[best]:.2f}x" for m in CONV_METHODS)
        rows.append((shape, dtype, kind, best, num(ms[best]), *rel, auto))
    return lines + table(header, rows) + [""]


def images_section(out) -> list[str]:
    lines = ["## Main job (shapes_fcn8s): training images/s", ""]
    rows = []
    for dtype in ("float32", "bfloat16"):
        data = load(out / f"train-{dtype}.json") or {}
        r = next((r for r in data.get("rows", []) if r["family"] == "shapes"), {})
        ips = num(r["batch"] / r["fcnjax_ms"] * 1e3) if "fcnjax_ms" in r else "not measured"
        rows.append((f"train_step on a fixed batch, {dtype}", ips))
    loop_ = load(out / "loop.json") or {}
    if "images_per_s" in loop_:
        what = (
            f"whole loop, data pipeline included ({loop_['dtype']}; `{loop_['command']}`: "
            f"{loop_['steps']} steps in {loop_['seconds']:.1f} s after step {loop_['from_step']})"
        )
        rows.append((what, num(loop_["images_per_s"])))
    else:
        rows.append(("whole loop, data pipeline included", "not measured"))
    return lines + table(("measure", "images/s"), rows) + [""]


def report(args) -> int:
    """``OUT/results.md``: device, versions, every table; prints the fastest methods."""
    out = Path(args.out)
    info = load(out / "env.json") or {}
    device = info.get("jax_device", "unknown device")
    lines = [
        f"# fcnjax GPU benchmark on {device}, {info.get('date', '?')}, {info.get('host', '?')}",
        "",
        f"`bash bench/gpu.sh {args.invocation}`".replace(" `", "`")
        + (f" at commit {info['commit']}" if info.get("commit") else "")
        + (f" ({info['changed_files']} files changed)" if info.get("changed_files") else "")
        + ".",
        "",
    ]
    if args.note:
        lines += [f"**{args.note}**", ""]
    v = info.get("versions", {})
    cuda = (
        f" (CUDA {info['torch_cuda']}, cuDNN {info['torch_cudnn']})" if "torch_cuda" in info else ""
    )
    versions = [
        (
            "JAX device",
            f"{device} ({info.get('jax_devices')} x, backend {info.get('jax_backend')})",
        ),
        ("PyTorch device", info.get("torch_device", "?")),
        ("nvidia-smi", info.get("nvidia_smi", "-")),
        ("jax / jaxlib", f"{v.get('jax')} / {v.get('jaxlib')}"),
        ("jax CUDA plugin", v.get("jax-cuda12-plugin") or v.get("jax-cuda13-plugin") or "-"),
        ("flax / optax / orbax-checkpoint", " / ".join(str(v.get(n)) for n in VERSIONS[4:7])),
        ("torch", f"{v.get('torch')}{cuda}"),
        ("onnxruntime", v.get("onnxruntime-gpu") or v.get("onnxruntime") or "-"),
        ("numpy / grain", f"{v.get('numpy')} / {v.get('grain')}"),
        ("Python, CPUs", f"{info.get('python')}, {info.get('machine')}, {info.get('cpus')}"),
        ("environment", " ".join(f"{k}={x}" for k, x in info.get("environment", {}).items())),
    ]
    lines += ["## Device and versions", ""] + table(("", ""), versions) + [""]
    stage_rows = [(name, *fields) for name, fields in stages(out).items()]
    lines += ["## Stages", ""]
    lines += table(("stage", "exit code", "seconds", "time limit (s)"), stage_rows) + [""]
    ran = set(args.ran or args.families)
    lines += images_section(out)
    for dtype in ("float32", "bfloat16"):
        lines += train_section(out, dtype, args.families, ran)
    fastest = []
    for dtype in ("float32", "bfloat16"):
        section, rows = conv_section(out, dtype)
        lines += section
        fastest += rows
    lines += fastest_section(fastest)
    results = out / "results.md"
    results.write_text("\n".join(lines))
    print("\n".join(images_section(out) + fastest_section(fastest)))
    print(f"results: {results}\nfolder: {out}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("install", help="fcnjax from this tree, offline")
    p.add_argument("wheels", help="the folder of wheels (bench/wheels)")
    p = sub.add_parser("env", help="device names and versions")
    p.add_argument("json")
    p = sub.add_parser("loop", help="`fcnjax train` images/s")
    p.add_argument("json")
    p.add_argument("--config", default="shapes_fcn8s")
    p.add_argument("--seconds", type=float, default=20, help="of logged steps, then stop")
    p.add_argument("--timeout", type=float, default=300, help="stop by then in any case")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p = sub.add_parser("report", help="OUT/results.md from OUT's JSON files")
    p.add_argument("out")
    p.add_argument("--families", nargs="+", required=True, help="rows of the step tables")
    p.add_argument("--ran", nargs="+", help="the families run (default: all)")
    p.add_argument("--invocation", default="", help="gpu.sh's arguments, for the title")
    p.add_argument("--note", default="", help="a line under the title")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    return {"install": install, "env": env, "loop": loop, "report": report}[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
