"""The XLA:CPU defaults every entry point applies (wrna_jax/xla_flags.py)."""

import os

from wrna_jax import xla_flags


def test_cpu_defaults_are_added_and_a_users_setting_is_kept():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    xla_flags.apply_cpu_defaults(environ)
    assert environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=4",
                                            "--xla_cpu_experimental_ynn_fusion_type=dot"]
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
    xla_flags.apply_cpu_defaults(mine)
    assert mine == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
    empty: dict = {}
    xla_flags.apply_cpu_defaults(empty)
    assert empty == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}


def test_the_test_session_runs_with_them():
    """conftest applies them before JAX starts, so the suite compiles what users run (with LLVM's
    optimisation off unless XLA_FLAGS sets a level: tests/conftest.py)."""
    assert "--xla_cpu_experimental_ynn_fusion_type=dot" in os.environ["XLA_FLAGS"].split()
    assert any(flag.startswith("--xla_backend_optimization_level=") for flag in os.environ["XLA_FLAGS"].split())
    assert xla_flags.apply_cpu_defaults({}) is False  # JAX has started by now: too late to change
