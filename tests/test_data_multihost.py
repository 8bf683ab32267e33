"""Two real JAX processes (jax.distributed, 2 CPU devices each) load their rows and
assemble global batches that equal the single-process loader's batches."""

import os
import socket
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.distributed.initialize(
        f"localhost:{sys.argv[2]}", num_processes=2, process_id=int(sys.argv[1])
    )
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from fcnjax import data

    assert jax.process_count() == 2 and jax.device_count() == 4
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    src = data.Shapes(30, size=16)
    train = data.TrainTransform(size=8)
    local = list(data.train_loader(src, 8, train, seed=3, num_epochs=1))
    single = list(data.train_loader(src, 8, train, seed=3, num_epochs=1, process_count=1,
                                    process_index=0))
    assert len(local) == len(single) == 3, (len(local), len(single))
    for mine, whole in zip(local, single):
        assert mine["image"].shape[0] == 4
        out = data.global_batch(mine, sharding)
        assert out["image"].shape == (8, 8, 8, 3)
        gathered = multihost_utils.process_allgather(out, tiled=True)
        for key in whole:
            np.testing.assert_array_equal(np.asarray(gathered[key]), whole[key])
    # Evaluation: 30 examples in global batches of 8 -> 4 batches, 2 padding rows.
    ev = data.EvalTransform(size=16)
    seen = []
    for mine in data.eval_loader(src, 8, ev):
        out = multihost_utils.process_allgather(data.global_batch(mine, sharding), tiled=True)
        seen += np.asarray(out["index"])[np.asarray(out["valid"])].tolist()
    assert sorted(seen) == list(range(30)), seen
    print("ok", jax.process_index())
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_assemble_the_global_batch(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), port],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            outputs.append((p.returncode, out, err))
    finally:
        for p in procs:
            p.kill()
    for i, (code, out, err) in enumerate(outputs):
        assert code == 0 and f"ok {i}" in out, err[-3000:]
