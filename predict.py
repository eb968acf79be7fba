"""Predict image files: python predict.py --config=configs/dogs.py --workdir=runs/dogs photo.jpg photos/

Prints the top-k classes with their names and probabilities and the gates for every image, and
writes <output_dir>/<image>_attention.png (the attention masks over it) and predictions.json
(default output_dir: <workdir>/predictions). --released=FILE predicts with a checkpoint of the
authors' PyTorch code instead of the run's; --json prints only the JSON. A user error prints one
line and exits with status 2; -v 1 shows the libraries' INFO logging.
"""

import json
import os

from absl import flags

from wrna_jax import cli
from wrna_jax.predict import predict

cli.define_checkpoint_flags("<workdir>/eval_<checkpoint> for eval.py, <workdir>/predictions for predict.py")
flags.DEFINE_string("released", None, "A .pth/.safetensors checkpoint of the authors' code to predict with instead.")
flags.DEFINE_integer("top_k", 5, "How many classes to report per image.")
flags.DEFINE_bool("json", False, "Print predictions.json's content only.")


def main(images: list[str]) -> int:
    FLAGS = cli.FLAGS
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.workdir, "predictions")
    predictions = predict(FLAGS.config, images, output_dir, workdir_path=FLAGS.workdir, which=FLAGS.checkpoint,
                          released=FLAGS.released, top_k=FLAGS.top_k)
    if FLAGS.json:
        print(json.dumps(predictions, indent=2))
        return 0
    for p in predictions:
        top = ", ".join(f"{t['name']} {100 * t['probability']:.1f}%" for t in p["top"])
        gates = ", ".join(f"{name} {g:.2f}" for name, g in p["gates"].items())
        print(f"{p['image']}: {top}\n  gates: {gates}" + (f"\n  masks: {p['attention_png']}" if p["attention_png"] else ""))
    print(f"Wrote {os.path.join(output_dir, 'predictions.json')}")
    return 0


if __name__ == "__main__":
    cli.run(main, positional=True)
