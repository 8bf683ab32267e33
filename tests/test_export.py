"""fcnjax.export: StableHLO files that run where neither fcnjax nor flax is imported, and ONNX
files that ONNX Runtime runs, each giving the Predictor's answers on the same images.

The workdirs are written here as training writes them (``config.json``, ``run_info.json``,
an orbax checkpoint) with the networks' own random initialisation, perturbed so that no
layer is zero (FCN's score layers start at zero: every label would be class 0), instead of
training each family: the exports are what is under test, and compiling a training step per
family would cost more than everything else here (that predict.load reads what the trainer
writes is test_train.py's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fcnjax import config as config_lib
from fcnjax import export as export_lib
from fcnjax import export_onnx, predict
from fcnjax.data import normalize
from fcnjax.export import export
from fcnjax.training import checkpoints as ckpt
from fcnjax.training import experiment

pytestmark = pytest.mark.usefixtures("cheap_compiles")

SIZE = 32  # the shapes data's images: every family's example size (the autoencoder's: 28)
# Tiny networks of every family; normalisations vary so that each form is inside a graph.
FAMILIES = {
    # The main job's FCN-8s (shapes_fcn8s: VGG16-BN, bilinear final upsampling), narrower.
    "fcn8s": (
        dict(
            name="fcn8s", backbone="vgg16_bn", width=1 / 16, dropout=0.0, final_upsample="bilinear"
        ),
        "unit",
    ),
    "segnet": (dict(name="segnet_basic", widths=(4, 8), kernel_size=3), "caffe"),
    "unet_mini": (dict(name="unet_mini", widths=(4, 8)), "unit"),
    "fcn_resnet50": (dict(name="fcn_resnet50", width=1 / 16), "imagenet"),
    "resnet50_unet": (dict(name="resnet50_unet", width=1 / 16), "imagenet"),
    "autoencoder": (dict(name="conv_autoencoder", channels=3, features=(4, 8)), "unit"),
}


def onnx_runtime():
    """onnxruntime, where the test extra installs the onnx extra (Python 3.11: missing, the
    test fails, so that a broken install cannot pass by skipping); elsewhere skipped."""
    if (3, 11) <= sys.version_info[:2] < (3, 12):
        import jax2onnx  # noqa: F401
        import onnxruntime

        return onnxruntime
    pytest.importorskip("jax2onnx")
    return pytest.importorskip("onnxruntime")


def family_config(family: str):
    c = config_lib.load_config("shapes_fcn8s:runlocal")
    model, normalization = FAMILIES[family]
    c.model = model
    c.data.size = 28 if family == "autoencoder" else SIZE
    c.data.num_examples = 8
    c.eval_data = None
    c.input.size = (c.data.size,) * 2
    c.input.normalization = normalization
    if family == "autoencoder":
        c.task = "autoencoder"
        c.input.mode = "none"
    return c


def perturbed(run, variables, rng: np.random.Generator):
    """Distinct parameters: kernels plus Gaussian noise of variance 1 / fan-in, the rest
    plus a little (FCN's zero-initialised score layers would give class 0 everywhere); and
    BatchNorm's running statistics those of random images, as training leaves them (with
    the initial ones, ResNet's activations grow ~1000x over its blocks and Caffe's
    0 ... 255 inputs saturate every softmax)."""

    def perturb(p):
        scale = 0.3 / np.sqrt(np.prod(p.shape[:-1])) if p.ndim >= 2 else 0.01
        return p + rng.normal(0, scale, p.shape).astype(p.dtype)

    variables = {**variables, "params": jax.tree.map(perturb, variables["params"])}
    if "batch_stats" not in variables:
        return variables
    images = rng.integers(0, 256, (4, *run.example_shape[1:]), np.uint8)
    x = normalize(images, run.eval_transform.normalization)

    @jax.jit
    def updated(fill):  # the running averages m * fill + (1 - m) * batch, m per layer
        stats = jax.tree.map(lambda s: jnp.full_like(s, fill), variables["batch_stats"])
        _, new = run.model.apply(
            {**variables, "batch_stats": stats},
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(0)},
        )
        return new["batch_stats"]

    zero, one = updated(0.0), updated(1.0)  # (1 - m) * batch, and m + (1 - m) * batch
    batch = jax.tree.map(lambda a, b: np.asarray(a / (1 - b + a)), zero, one)
    return {**variables, "batch_stats": batch}


def write_workdir(config, workdir: Path) -> Path:
    """A workdir as training leaves it, with perturbed initial parameters at step 1."""
    built = experiment.build(config, with_eval=False)
    run = built.run
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(built.config_json)
    (workdir / "run_info.json").write_text(json.dumps(run.info()))
    variables = jax.jit(run.model.init)(jax.random.key(0), jnp.zeros(run.example_shape))
    variables = jax.tree.map(np.asarray, dict(variables))
    state = perturbed(run, variables, np.random.default_rng(0))
    saver = ckpt.Checkpointer(workdir, asynchronous=False)
    saver.save(1, state, None, {"step": 1})
    saver.close()
    return workdir


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """``{family: workdir}``, written on first use."""
    root = tmp_path_factory.mktemp("workdirs")
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = write_workdir(family_config(family), root / family)
        return made[family]

    return get


@pytest.fixture(scope="module")
def predictors(workdirs):
    made: dict[str, predict.Predictor] = {}

    def get(family: str) -> predict.Predictor:
        if family not in made:
            made[family] = predict.load(workdirs(family))
        return made[family]

    return get


def images_for(predictor, n: int = 3, seed: int = 1) -> np.ndarray:
    h, w = predictor.run.example_shape[1:3]
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, predictor.channels), np.uint8)


def reference(predictor, images: np.ndarray):
    """The Predictor's answers image by image: ``(labels, probabilities)``, or the
    autoencoder's reconstruction."""
    if predictor.num_classes is None:
        apply = jax.jit(lambda x: predictor.run.model.apply(predictor.variables, x, train=False))
        norm = predictor.run.eval_transform.normalization
        return np.stack([np.asarray(apply(normalize(im, norm)[None]))[0] for im in images])
    logits = np.stack([predictor.logits(im) for im in images])
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    labels = np.stack([predictor(im) for im in images]).astype(np.int32)
    return labels, probs


def assert_labels(got: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> None:
    """The same labels, except where the two best classes are within 1e-5 (float order)."""
    top2 = np.sort(probs, axis=-1)[..., -2:]
    tied = top2[..., 1] - top2[..., 0] < 1e-5
    assert got.dtype == np.int32 and got.shape == labels.shape
    assert tied.mean() < 0.01
    np.testing.assert_array_equal(np.where(tied, 0, got), np.where(tied, 0, labels))


def assert_telling(labels: np.ndarray, probs: np.ndarray) -> None:
    """Answers that a wrong graph would not give by chance: several classes, and
    probabilities that are not all saturated (so that 1e-4 means something)."""
    assert len(np.unique(labels)) > 1
    assert (probs.max(-1) < 0.999).mean() > 0.5


# The StableHLO file in a fresh interpreter: jax and numpy only.
RUNNER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from jax import export

    exported = export.deserialize(open(sys.argv[1], "rb").read())
    images = np.load(sys.argv[2])
    one, three = exported.call(images[:1]), exported.call(images)
    one, three = [x if isinstance(x, (tuple, list)) else (x,) for x in (one, three)]
    assert "fcnjax" not in sys.modules and "flax" not in sys.modules, "imported"
    np.savez(
        sys.argv[3],
        **{f"one{i}": np.asarray(x) for i, x in enumerate(one)},
        **{f"three{i}": np.asarray(x) for i, x in enumerate(three)},
        platforms=np.array(exported.platforms),
        shape=np.array([str(d) for d in exported.in_avals[0].shape]),
    )
    """
)


def run_stablehlo(path: Path, images: np.ndarray, tmp_path: Path) -> dict[str, np.ndarray]:
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            str(path),
            str(tmp_path / "images.npy"),
            str(tmp_path / "out.npz"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository: fcnjax is not importable by accident
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(tmp_path / "out.npz"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_stablehlo_runs_without_fcnjax(family, workdirs, predictors, tmp_path):
    predictor = predictors(family)
    autoencoder = family == "autoencoder"
    path = export(workdirs(family), tmp_path / "model.stablehlo", probabilities=not autoencoder)
    images = images_for(predictor)
    out = run_stablehlo(path, images, tmp_path)
    assert list(out["shape"]) == ["b", *map(str, images.shape[1:])]  # one file, any batch
    assert list(out["platforms"]) == ["cpu"]
    if autoencoder:
        want = reference(predictor, images)
        np.testing.assert_allclose(out["three0"], want, atol=1e-4)
        np.testing.assert_allclose(out["one0"], want[:1], atol=1e-4)
        return
    labels, probs = reference(predictor, images)
    assert_telling(labels, probs)
    assert_labels(out["three0"], labels, probs)
    assert_labels(out["one0"], labels[:1], probs[:1])
    np.testing.assert_allclose(out["three1"], probs, atol=1e-4)
    np.testing.assert_allclose(out["one1"], probs[:1], atol=1e-4)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_runs_in_onnxruntime(family, workdirs, predictors, tmp_path):
    ort = onnx_runtime()
    predictor = predictors(family)
    autoencoder = family == "autoencoder"
    path = export(
        workdirs(family), tmp_path / "model.onnx", format="onnx", probabilities=not autoencoder
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert image.name == "image" and image.type == "tensor(uint8)"
    assert image.shape == ["B", *predictor.run.example_shape[1:]]
    names = [o.name for o in session.get_outputs()]
    assert names == (["reconstruction"] if autoencoder else ["labels", "probabilities"])
    images = images_for(predictor)
    one, three = (session.run(None, {"image": x}) for x in (images[:1], images))
    if autoencoder:
        want = reference(predictor, images)
        np.testing.assert_allclose(three[0], want, atol=1e-4)
        np.testing.assert_allclose(one[0], want[:1], atol=1e-4)
        return
    labels, probs = reference(predictor, images)
    assert_telling(labels, probs)
    assert_labels(three[0], labels, probs)
    assert_labels(one[0], labels[:1], probs[:1])
    np.testing.assert_allclose(three[1], probs, atol=1e-4)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["fcnjax.class_names"]) == list(predictor.run.class_names)
    assert meta["fcnjax.task"] == "segmentation" and meta["fcnjax.step"] == "1"


def test_dynamic_height_and_width_where_the_network_allows(workdirs, predictors, tmp_path):
    predictor = predictors("fcn_resnet50")  # dilated, no crops: any size
    path = export(workdirs("fcn_resnet50"), tmp_path / "any.stablehlo", dynamic=True)
    exported = jax.export.deserialize(path.read_bytes())
    assert [str(d) for d in exported.in_avals[0].shape] == ["b", "h", "w", "3"]
    for shape in [(2, 24, 40, 3), (1, 33, 17, 3)]:
        images = np.random.default_rng(2).integers(0, 256, shape, np.uint8)
        labels, probs = reference(predictor, images)
        assert_labels(np.asarray(exported.call(images)), labels, probs)


def test_dynamic_onnx(workdirs, predictors, tmp_path):
    ort = onnx_runtime()
    predictor = predictors("fcn_resnet50")
    path = export(workdirs("fcn_resnet50"), tmp_path / "any.onnx", format="onnx", dynamic=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["B", "h", "w", 3]
    for shape in [(2, 24, 40, 3), (1, 33, 17, 3)]:
        images = np.random.default_rng(2).integers(0, 256, shape, np.uint8)
        labels, probs = reference(predictor, images)
        assert_labels(session.run(None, {"image": images})[0], labels, probs)


@pytest.mark.parametrize("family", ["fcn8s", "segnet", "unet_mini", "autoencoder"])
def test_dynamic_sizes_refused_naming_the_fix(family, workdirs, tmp_path):
    with pytest.raises(ValueError, match=r"symbolic height and width .*--size HxW") as e:
        export(workdirs(family), tmp_path / "x.stablehlo", dynamic=True)
    assert "\n" not in str(e.value) and FAMILIES[family][0]["name"] in str(e.value)
    assert not any(tmp_path.iterdir())


def test_size_and_platforms(workdirs, predictors, tmp_path):
    predictor = predictors("unet_mini")
    path = export(
        workdirs("unet_mini"), tmp_path / "u.stablehlo", size="24x40", platforms="cpu,cuda,tpu"
    )
    exported = jax.export.deserialize(path.read_bytes())
    assert exported.platforms == ("cpu", "cuda", "tpu")
    assert [str(d) for d in exported.in_avals[0].shape] == ["b", "24", "40", "3"]
    images = np.random.default_rng(3).integers(0, 256, (2, 24, 40, 3), np.uint8)
    labels, probs = reference(predictor, images)
    assert_labels(np.asarray(exported.call(images)), labels, probs)  # run here, on the CPU
    with pytest.raises(ValueError, match=r"cannot take 32x32 images: ConvAutoencoder expects"):
        export(workdirs("autoencoder"), tmp_path / "a.stablehlo", size=(32, 32))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(format="tflite"),
            ValueError,
            "--format must be one of stablehlo, onnx; got 'tflite'",
        ),
        (dict(platforms="cpu,gpu"), ValueError, "--platforms must name some of cpu, cuda"),
        (dict(platforms=()), ValueError, "--platforms must name some of"),
        (dict(size="32"), ValueError, "--size must be HxW with positive integers"),
        (dict(size="0x32"), ValueError, "--size must be HxW with positive integers"),
        (dict(size=(32,)), ValueError, r"`size` must be \(H, W\)"),
        (dict(size=(32, 32), dynamic=True), ValueError, "either a fixed --size or --dynamic"),
    ],
)
def test_bad_arguments_stop_before_loading(kwargs, error, message, tmp_path):
    with pytest.raises(error, match=message) as e:
        export(tmp_path / "no-such-workdir", tmp_path / "x.out", **kwargs)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_workdirs_without_a_model(workdirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export(tmp_path, tmp_path / "x.stablehlo")
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "run_info.json"):
        (bare / name).write_bytes((workdirs("unet_mini") / name).read_bytes())
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint directory"):
        export(bare, tmp_path / "x.stablehlo")
    with pytest.raises(ValueError, match="autoencoder: it has no classes"):
        export(workdirs("autoencoder"), tmp_path / "x.stablehlo", probabilities=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare"]


def test_existing_outputs_are_replaced_only_when_asked(workdirs, tmp_path):
    out = tmp_path / "model.stablehlo"
    out.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=f"--output {out} exists already; pass --overwrite"):
        export(workdirs("unet_mini"), out)
    assert out.read_bytes() == b"mine"
    with pytest.raises(IsADirectoryError):
        export(workdirs("unet_mini"), tmp_path)
    assert export(workdirs("unet_mini"), out, overwrite=True) == out
    assert jax.export.deserialize(out.read_bytes()).platforms == ("cpu",)
    assert [p.name for p in tmp_path.iterdir()] == ["model.stablehlo"]  # no temporary file


def test_a_file_that_appears_while_exporting_is_kept(tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    real_link = os.link

    def racing_link(src, dst):  # another process creates the output first
        Path(dst).write_bytes(b"theirs")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    with pytest.raises(FileExistsError, match="appeared while exporting; it was not replaced"):
        export_lib._write(out, b"ours", overwrite=False)
    assert out.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_onnx_without_its_extra_names_it(workdirs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # import jax2onnx raises ImportError
    with pytest.raises(ImportError, match=r'pip install "fcnjax\[onnx\]"'):
        export(workdirs("unet_mini"), tmp_path / "x.onnx", format="onnx")
    assert list(tmp_path.iterdir()) == []


def test_onnx_failures_write_nothing(workdirs, tmp_path, monkeypatch):
    onnx_runtime()
    # A primitive no ONNX converter knows: the error names it.
    unknown = jax.extend.core.Primitive("fcnjax_test_unknown")
    unknown.def_abstract_eval(lambda x: x)
    unknown.def_impl(lambda x: x)
    serve = export_lib.serving_function
    monkeypatch.setattr(
        export_lib,
        "serving_function",
        lambda p, **kw: lambda x: serve(p, **kw)(unknown.bind(x)),
    )
    with pytest.raises(ValueError, match="could not convert the primitive 'fcnjax_test_unknown'"):
        export(workdirs("unet_mini"), tmp_path / "x.onnx", format="onnx")
    monkeypatch.setattr(export_lib, "serving_function", serve)
    # ONNX Runtime's answers checked against JAX's before writing (here: any difference).
    monkeypatch.setattr(export_onnx, "CHECK_TOLERANCE", -1.0)
    with pytest.raises(ValueError, match="gives probabilities .* from JAX's .*: not written"):
        export(workdirs("unet_mini"), tmp_path / "x.onnx", format="onnx", probabilities=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seed", range(4))
def test_the_replacements_given_to_jax2onnx_compute_the_same(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    config = [
        (int(rng.integers(-2, 3)), int(rng.integers(-2, 3)), int(rng.integers(0, 3)))
        for _ in x.shape
    ]
    np.testing.assert_array_equal(
        export_onnx.pad(jnp.asarray(x), jnp.float32(7), config), lax.pad(x, 7.0, config)
    )
    window = (1, *rng.integers(1, 4, 2), 1)
    strides = (1, *rng.integers(1, 3, 2), 1)
    padding = ((0, 0), *[tuple(rng.integers(0, 2, 2)) for _ in range(2)], (0, 0))
    np.testing.assert_array_equal(
        export_onnx.window_max(x, window, strides, padding),
        lax.reduce_window(x, -np.inf, lax.max, window, strides, padding),
    )
    ints = rng.integers(-20, 20, (3, 4)).astype(np.int32)

    def f(v):
        edge = jnp.pad(v, ((0, 0), (1, 2)), mode="edge")  # makes arrays of no elements
        return lax.rem(v, 3), lax.clamp(-5, v, 5), jnp.pad(v, ((0, 0), (1, 2))), edge

    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 4"), jnp.int32)
    ready = export_onnx.onnx_ready(f, spec)
    eqns = jax.make_jaxpr(ready)(spec).jaxpr.eqns
    assert not {e.primitive.name for e in eqns} & {"rem", "clamp", "pad", "jit"}
    assert all(0 not in v.aval.shape for e in eqns for v in e.outvars)
    ready_exported = jax.export.export(jax.jit(ready))(spec)  # traced with spec, as jax2onnx
    for got, want in zip(ready_exported.call(ints), f(ints)):
        np.testing.assert_array_equal(got, want)


# The command line: one line and an honest status for each bad input, nothing written.
@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--format", "tflite"], 2, "--format must be one of stablehlo, onnx"),
        (["--size", "12"], 2, "--size must be HxW"),
        (["--dynamic"], 2, "symbolic height and width"),
        (["--platforms", "cpu,gpu"], 2, "--platforms must name some of"),
    ],
)
def test_cli_export_errors_are_one_line(args, code, message, workdirs, tmp_path, capsys):
    from fcnjax import cli

    out = tmp_path / "model"
    rc = cli.main(["export", "--workdir", str(workdirs("fcn8s")), "--output", str(out), *args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("fcnjax export:")]
    assert rc == code and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and not out.exists()


def test_cli_export_writes_refuses_to_replace_and_needs_a_checkpoint(workdirs, tmp_path, capsys):
    from fcnjax import cli

    out = tmp_path / "model.stablehlo"
    args = ["export", "--workdir", str(workdirs("fcn8s")), "--output", str(out)]
    assert cli.main(args) == 0
    assert str(out) in capsys.readouterr().out and out.stat().st_size > 0
    before = out.read_bytes()
    assert cli.main(args) == 2
    line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("fcnjax ")]
    assert len(line) == 1 and "--overwrite" in line[0] and out.read_bytes() == before
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((workdirs("fcn8s") / "config.json").read_text())
    assert cli.main(["export", "--workdir", str(empty), "--output", str(tmp_path / "x")]) == 1
    assert not (tmp_path / "x").exists()
