"""Evaluate a trained run: python eval.py --config=configs/cluttered_mnist.py --workdir=runs/cmnist

Writes eval_results.json and PNG figures to <workdir>/eval_<checkpoint>/.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from wrna_jax import distributed
from wrna_jax.evaluate import evaluate_checkpoint

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run's directory.")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
flags.DEFINE_string("split", None, "Dataset split to evaluate (default: the config's test split).")
flags.DEFINE_string("output_dir", None, "Where to write results (default <workdir>/eval_<checkpoint>).")
config_flags.DEFINE_config_file("config", None, "The configuration the run was trained with.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    distributed.initialize(FLAGS.config.distributed)
    results = evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint, FLAGS.split,
                                  FLAGS.output_dir)
    print(json.dumps({k: v for k, v in results.items() if k != "hypothesis_accuracy"}, indent=2))


if __name__ == "__main__":
    app.run(main)
