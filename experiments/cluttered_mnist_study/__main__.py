"""python -m experiments.cluttered_mnist_study: see run.py."""

from wrna_jax import xla_flags

xla_flags.apply_cpu_defaults()

from experiments.cluttered_mnist_study.run import main  # noqa: E402

main()
