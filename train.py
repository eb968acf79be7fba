"""Train a WRNA model: python train.py --config=configs/cluttered_mnist.py --workdir=runs/cmnist

Running it again with the same --workdir resumes from the latest intact checkpoint. The same
command runs on one CPU, one multi-GPU host or several processes/hosts
(`--config.distributed.*`, or a SLURM/Open MPI launch: see README). On SIGTERM it saves a
checkpoint and exits with status 0, on Ctrl-C (SIGINT) the same with status 130; a user error
(config, flags, workdir) prints one line and exits with status 2. The console shows progress,
results and warnings; -v 1 (--verbosity=1) adds the libraries' INFO logging.
"""

from wrna_jax import cli, distributed
from wrna_jax.train import train_and_evaluate


def main() -> int:
    distributed.initialize(cli.FLAGS.config.distributed)
    result = train_and_evaluate(cli.FLAGS.config, cli.FLAGS.workdir)
    return cli.EXIT_INTERRUPTED if result.get("interrupted_by") == "SIGINT" else 0


if __name__ == "__main__":
    cli.run(main)
