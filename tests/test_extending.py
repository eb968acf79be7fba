"""Extending is local: a backbone and a dataset family each added from one file of their own
(tests/extension/), with no change to the package, train a step and evaluate."""

import json
import os
import sys

from conftest import TESTS


def test_a_new_backbone_and_dataset_family_from_one_file_each_train_and_evaluate(tmp_path):
    sys.path.insert(0, os.path.join(TESTS, "extension"))
    import toy_backbone  # noqa: F401  (registers 'toy_cnn')
    import toy_dataset  # noqa: F401  (registers 'toy_stripes' and the 'stripes' family)

    from configs import default
    from wrna_jax.evaluate import evaluate_checkpoint
    from wrna_jax.train import train_and_evaluate

    config = default.get_config()
    config.dataset = default.dataset("toy_stripes", data_dir=str(tmp_path / "data"))
    config.evals = {"attention_masks": {"examples": 2}}
    config.model.backbone = "toy_cnn"
    config.attention.update(depth=2, width=2)
    config.update(batch_size=32, eval_batch_size=8, num_epochs=1, log_every_steps=1)  # one step
    result = train_and_evaluate(config, str(tmp_path / "run"))
    assert result["step"] == 1 and result["num_examples"] == 16
    evaluated = evaluate_checkpoint(config, str(tmp_path / "run"), "latest")
    assert evaluated["accuracy"] == result["accuracy"]  # the checkpoint of the step just trained
    assert set(evaluated["hypothesis_accuracy"]) == {"backbone", "conv2/head0", "conv2/head1", "conv1/head0",
                                                     "conv1/head1"}
    saved = json.load(open(tmp_path / "run" / "eval_latest" / "eval_results.json"))
    assert saved["figures"]["attention_masks"].endswith("attention_masks.png")
