"""XLA:CPU compiler settings that make our CPU training steps faster, applied by every entry point
(train.py, eval.py, the study, the benchmarks, the tests) before JAX starts its backends.

`--xla_cpu_experimental_ynn_fusion_type=dot` runs matrix products and convolutions through
YNNPACK instead of Eigen: alone, it took the cluttered-MNIST attention train step from 244 to
161-170 ms on 2 cores (README, "CPU training speed against PyTorch"). The flags name the CPU backend only; a
GPU's programs are unchanged. A flag the user already set in XLA_FLAGS is left as the user set it
(e.g. `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=` turns YNNPACK off again).
"""

import os

CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "dot"}


def apply_cpu_defaults(environ: dict | None = None) -> bool:
    """Adds `CPU_FLAGS` to XLA_FLAGS in `environ` (default os.environ), keeping any flag already
    set there; True when JAX's backends had not started yet, so the flags take effect."""
    from jax._src import xla_bridge  # No public API says whether the backends have started.

    environ = os.environ if environ is None else environ
    present = environ.get("XLA_FLAGS", "").split()
    names = {flag.lstrip("-").split("=", 1)[0] for flag in present}
    added = [f"--{name}={value}" for name, value in CPU_FLAGS.items() if name not in names]
    if added:
        environ["XLA_FLAGS"] = " ".join(present + added)
    return not xla_bridge.backends_are_initialized()
