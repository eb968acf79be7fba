"""Evaluate a trained run: python eval.py --config=configs/cluttered_mnist.py --workdir=runs/cmnist

Writes eval_results.json (every result) and PNG figures to <workdir>/eval_<checkpoint>/ (or
--output_dir) and prints a summary: accuracy, top-5, per-hypothesis accuracy and gates, the
distractor sweep or the most confused classes, the files written. It may run while train.py
trains in the same workdir. A user error prints one line and exits with status 2; -v 1 shows
the libraries' INFO logging.
"""

from absl import flags

from wrna_jax import cli, distributed
from wrna_jax.evaluate import evaluate_checkpoint, summary

cli.define_checkpoint_flags("<workdir>/eval_<checkpoint> for eval.py, <workdir>/predictions for predict.py")
flags.DEFINE_string("split", None, "Dataset split to evaluate (default: the config's test split).")


def main() -> int:
    FLAGS = cli.FLAGS
    distributed.initialize(FLAGS.config.distributed)
    results = evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint, FLAGS.split,
                                  FLAGS.output_dir)
    print(summary(results))
    return 0


if __name__ == "__main__":
    cli.run(main)
