#!/usr/bin/env bash
# fcnjax on an NVIDIA GPU, in one run of under 8 minutes (issue 25): the training step of every
# model family against PyTorch in float32 (TF32) and bfloat16 (bench/train_step.py), the
# transposed-convolution methods per shape (bench/conv_transpose.py, and which one is fastest:
# the data for select_method's GPU rule), the shapes_fcn8s job's training images/s (its step,
# and the whole `fcnjax train` loop), in one results file with the device and versions.
#
#   bash bench/gpu.sh                     # on the GPU machine: about 7 minutes
#   bash bench/gpu.sh --out "$OUT/gpu"    # the results where the device tool collects them
#   bash bench/gpu.sh --cpu               # a dry run on a CPU: tiny shapes, a few minutes
#   bash bench/gpu.sh --cpu --smoke       # tests/test_gpu_script.py: fewer families, ~1 minute
#
# Options: --cpu, --smoke (with --cpu), --no-install, --out DIR. Each stage runs under
# `timeout`, within a deadline for the whole run (GPU: 450 s), most important first; a stage
# cut short keeps the rows it had written, and the results say what was not reached.
# Results: DIR/results.md (quote it in bench/RESULTS.md), each stage's JSON and log, the folder
# printed at the end; DIR defaults to bench/gpu-results/<UTC date>-<host> (--cpu: a temp dir).
#
# Offline install: the GPU machine has jax + CUDA, flax, optax, orbax, torch + CUDA and
# onnxruntime, and no network. If fcnjax (with what the benchmarks import) does not import
# there, `bench/gpu.py install` installs it editable from this tree with
# `pip install --no-index --find-links bench/wheels -e .`, or, if a wheel is missing there,
# the folder's wheels whose packages are not installed, then fcnjax, all --no-deps. Fill
# bench/wheels/ (ignored by git) on a machine with network, for the GPU machine's Python
# (`python3 -V` there) and platform; the device tool carries it with `carry: ["bench/wheels"]`
# (64 MiB at most in all):
#
#   pip download -d bench/wheels --only-binary=:all: --python-version 3.X \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     'setuptools>=77' ml-collections absl-py grain tensorboardX pooch filelock tqdm \
#     safetensors h5py pillow importlib_resources flatbuffers
#   rm -f bench/wheels/{numpy,jax,jaxlib,ml_dtypes,scipy,opt_einsum,protobuf}-*.whl  # it has them
#   du -sh bench/wheels
#
# tensorflow-datasets (with pyarrow, ~40 MB) can stay out: no stage imports it; pip's resolve
# then fails on it and the --no-deps fallback installs the rest.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
cpu=0 smoke=0 install=1 out=""
args="$*"
while (($#)); do
  case $1 in
    --cpu) cpu=1 ;;
    --smoke) smoke=1 ;;
    --no-install) install=0 ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    -h | --help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ((smoke && !cpu)); then
  echo "gpu.sh: --smoke is for --cpu runs" >&2
  exit 2
fi

PY=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONUNBUFFERED=1  # a stage cut off by its timeout keeps its log
families=(shapes fcn8s unet_mini autoencoder segnet fcn_resnet50)  # shapes first: the main job
ran=("${families[@]}")
if ((cpu)); then
  # Compiling is most of a dry run on a CPU: XLA skips its optimisations (3-5x faster).
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_backend_optimization_level=0"
  device=cpu total=480 step_opts=(--tiny)
  conv_opts=(--smoke)
  loop_opts=(--seconds 8 --set log_every_steps=5 batch_size=8)
  note="CPU dry run (--cpu): tiny shapes, XLA unoptimised; the numbers measure nothing."
  if ((smoke)); then
    total=170 ran=(shapes unet_mini autoencoder)
    loop_opts=(--config shapes_fcn8s:runlocal --seconds 1 --set eval_every_steps=4)
    note="CPU smoke run (--cpu --smoke): tiny shapes, few families, XLA unoptimised."
  fi
  out=${out:-$(mktemp -d "${TMPDIR:-/tmp}/fcnjax-gpu-bench.XXXXXX")}
else
  # JAX and PyTorch share the GPU: JAX preallocates half (not 75%), PyTorch's worker the rest.
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}
  device=gpu total=450 step_opts=()
  conv_opts=(--quick)
  loop_opts=(--seconds 15 --set log_every_steps=50 num_steps=100000)
  loop_opts+=(checkpoint.every_steps=100000)  # no evaluation inside the measured steps
  note=""
  host=$(uname -n)
  out=${out:-bench/gpu-results/$(date -u +%Y%m%d-%H%M)-${host%%.*}}
fi
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)
: >"$out/stages.tsv"

LIMIT=0 failed=()
limit() { # limit CAP: LIMIT = CAP seconds, or what is left of the run's deadline
  local left=$((total - SECONDS - 10))  # 10 s for the report
  LIMIT=$(($1 < left ? $1 : left))
}

stage() { # stage NAME COMMAND...: COMMAND under `timeout LIMIT`, logged to $out/NAME.log
  local name=$1 start=$SECONDS rc
  shift
  if ((LIMIT < 15)); then
    echo "== $name: skipped, the run's ${total} s are spent"
    printf '%s\tskipped\t0\t%s\n' "$name" "$LIMIT" >>"$out/stages.tsv"
    return
  fi
  echo "== $name (at most ${LIMIT} s): $*"
  timeout -k 15 "$LIMIT" "$@" 2>&1 | tee "$out/$name.log"
  rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$LIMIT" >>"$out/stages.tsv"
  if ((rc != 0)); then
    echo "== $name: exit code $rc (124: out of time)"
    failed+=("$name")
  fi
}

train() { # train DTYPE CAP
  limit "$2"
  stage "train-$1" "$PY" bench/train_step.py --device "$device" --dtype "$1" --quick \
    "${step_opts[@]}" --only "${ran[@]}" --budget $((LIMIT - 20)) --json "$out/train-$1.json"
}

conv() { # conv DTYPE CAP
  limit "$2"
  stage "conv-$1" "$PY" bench/conv_transpose.py --device "$device" --dtype "$1" \
    "${conv_opts[@]}" --json "$out/conv-$1.json"
}

if ((install)); then
  limit 150
  stage install "$PY" bench/gpu.py install bench/wheels
fi
limit 60
stage env "$PY" bench/gpu.py env "$out/env.json"
train float32 170
conv float32 100
train bfloat16 150
limit 50
stage loop "$PY" bench/gpu.py loop "$out/loop.json" --timeout $((LIMIT - 5)) "${loop_opts[@]}"
conv bfloat16 80

"$PY" bench/gpu.py report "$out" --families "${families[@]}" --ran "${ran[@]}" \
  --invocation "$args" --note "$note"
echo "gpu.sh: ${SECONDS} s in all${failed[*]:+; stages that failed: ${failed[*]}}"
((${#failed[@]} == 0))
