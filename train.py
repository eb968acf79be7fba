"""Train a WRNA model: python train.py --config=configs/cluttered_mnist.py --workdir=runs/cmnist

Running it again with the same --workdir resumes from the latest checkpoint. The same command
runs on one CPU, one multi-GPU host or several processes/hosts (`--config.distributed.*`, or a
SLURM/Open MPI launch: see README). On SIGTERM it saves a checkpoint and exits with status 0.
"""

from absl import app, flags
from ml_collections import config_flags

from wrna_jax import distributed
from wrna_jax.train import train_and_evaluate

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and figures.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    distributed.initialize(FLAGS.config.distributed)
    train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
