"""Data parallelism: 8 simulated CPU devices give the single-device step (separate process,
since the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import jax, numpy as np, pytest
    from conftest import model_config
    from configs import cluttered_mnist
    from wrna_jax import parallel, steps
    from wrna_jax.models import create_model
    from wrna_jax.state import create_train_state

    assert jax.device_count() == 8
    config = cluttered_mnist.get_config()
    config.update_from_flattened_dict({"attention.depth": 3, "batch_size": 32})
    model = create_model(config)
    rng = np.random.default_rng(0)
    batch = {"image": rng.random((32, 40, 40, 1), np.float32),
             "label": rng.integers(0, 10, 32).astype(np.int32), "mask": np.ones(32, bool)}
    results = []
    for devices in (1, 8):
        mesh = parallel.create_mesh(devices)
        state = create_train_state(config, model, (40, 40, 1), mesh, steps_per_epoch=10)
        step = steps.make_train_step(config, model, mesh, steps_per_epoch=10)
        sharded = parallel.shard_batch(batch, parallel.batch_sharding(mesh))
        assert len(sharded["image"].sharding.device_set) == devices
        state, metrics = step(state, sharded)
        results.append(jax.device_get((state.params, state.batch_stats, metrics["loss"])))
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])))
    print("max abs difference", worst)
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by the 8 devices of the mesh: "
                                         r"use a multiple of 8 \\(e.g. 8 or 16\\)"):
        parallel.check_batch_size(12, parallel.create_mesh(8))
    print("OK")
""")


def test_eight_devices_match_one_device_on_the_same_global_batch():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
    print(result.stdout)
