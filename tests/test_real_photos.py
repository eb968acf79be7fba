"""Real photos end to end: a Stanford Cars devkit folder made of the JPEG photos that matplotlib
and scikit-learn ship, prepared by the manual builder, trained a few steps with the fine-grained
recipe on a tiny backbone and a held-out validation split, evaluated (per-class CSV and
confusion matrix against the predictions) and predicted (predict.py: top-5 with names, gates,
overlay PNGs, JSON). Ten-crop evaluation against every crop through the model:
tests/test_train.py."""

import csv
import json
import os

import jax
import matplotlib
import numpy as np
import pytest
import sklearn
from PIL import Image
from scipy import io

from conftest import read_png
from wrna_jax import cli
from wrna_jax.data import stanford_cars
from wrna_jax.data.input import create_input
from wrna_jax.errors import MissingFileError

PHOTOS = [os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg"),
          os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", "china.jpg"),
          os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", "flower.jpg")]
NAMES = [f"Make{c} Model{c} {2000 + c}" for c in range(stanford_cars.NUM_CLASSES)]
PER_CLASS = {"train": 4, "test": 2}


def _annotations(records):
    table = np.zeros((1, len(records)), dtype=[(field, "O") for field in stanford_cars.FIELDS])
    for i, record in enumerate(records):
        table[0, i] = tuple(record[field] for field in stanford_cars.FIELDS)
    return {"annotations": table}


def make_devkit(root):
    """cars_train/, cars_test/ and the .mat files of the official layout; photo p of the three is
    class p + 1, each file a different crop of it (boxes: the crop minus a margin)."""
    rng = np.random.default_rng(0)
    os.makedirs(root / "devkit")
    io.savemat(root / stanford_cars.META, {"class_names": np.array(NAMES, dtype=object)})
    truth = {}
    for split, count in PER_CLASS.items():
        folder = root / f"cars_{split}"
        os.makedirs(folder)
        records = []
        for p, photo in enumerate(PHOTOS):
            source = Image.open(photo).convert("RGB")
            for k in range(count):
                w, h = source.size
                cw, ch = int(w * rng.uniform(0.6, 0.9)), int(h * rng.uniform(0.6, 0.9))
                x, y = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
                fname = f"{len(truth) + 1:05d}.jpg"
                source.crop((x, y, x + cw, y + ch)).save(folder / fname, quality=90)
                truth[fname] = p
                records.append({"bbox_x1": 5, "bbox_y1": 5, "bbox_x2": cw - 6, "bbox_y2": ch - 6,
                                "class": p + 1, "fname": fname})
        path = root / ("devkit/cars_train_annos.mat" if split == "train" else stanford_cars.TEST_ANNOTATIONS)
        io.savemat(path, _annotations(records))
    return truth


def config_for(tmp_path):
    from configs import cars

    config = cars.get_config("manual")
    config.dataset.update(data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "manual"))
    config.dataset.images.update(image_size=32, resize_size=36)
    config.model.update(backbone="cifar_wrn", depth=10, width=1, bn_group_size=2, dtype="float32")
    config.init_from = None
    config.attention.depth = 2
    config.update(batch_size=4, eval_batch_size=4, num_epochs=2, log_every_steps=1)
    config.evals.attention_masks.examples = 2
    return config


def test_missing_devkit_says_what_to_download(tmp_path):
    config = config_for(tmp_path)
    os.makedirs(tmp_path / "manual")
    with pytest.raises(MissingFileError, match="cars_meta.mat") as error:
        create_input(config.dataset)
    assert "cars_train.tgz, cars_test.tgz, car_devkit.tgz" in str(error.value)


def test_real_photos_train_evaluate_and_predict(tmp_path, capsys):
    import eval as eval_script
    import predict as predict_script
    import train as train_script

    truth = make_devkit(tmp_path / "manual")
    config = config_for(tmp_path)
    data = create_input(config.dataset)
    assert data.class_names() == NAMES
    # Model selection on a validation split held out of train: 1 of each class's 4 (10%, at least one).
    assert data.split("eval_split") == "held_out" and data.builder.info.splits["train"].num_examples == 12
    assert (data.num_examples("train"), data.num_examples("held_out"), data.num_examples("test")) == (9, 3, 6)

    def examples(split, process_index=0, process_count=1):
        return {(np.asarray(image).tobytes(), int(label))
                for batch in data.eval_batches(split, 4, process_index=process_index, process_count=process_count)
                for image, label, real in zip(batch["image"], batch["label"], batch["mask"]) if real}

    train, held = examples("train"), examples("held_out")
    assert len(train) == 9 and len(held) == 3 and not train & held
    assert sorted(label for _, label in held) == [0, 1, 2]
    shares = [examples("held_out", p, 2) for p in (0, 1)]  # every process the same split, its own share
    assert shares[0] | shares[1] == held and not shares[0] & shares[1]
    flags = ["--config=configs/cars.py:manual", f"--workdir={tmp_path / 'run'}",
             f"--config.dataset.data_dir={tmp_path / 'tfds'}", f"--config.dataset.manual_dir={tmp_path / 'manual'}",
             "--config.dataset.images.image_size=32", "--config.dataset.images.resize_size=36",
             "--config.model.backbone=cifar_wrn", "--config.model.depth=10", "--config.model.width=1",
             "--config.model.bn_group_size=2", "--config.model.dtype=float32", "--config.init_from=",
             "--config.attention.depth=2", "--config.batch_size=4", "--config.eval_batch_size=4",
             "--config.num_epochs=2", "--config.log_every_steps=1", "--config.evals.attention_masks.examples=2"]
    assert cli.invoke(train_script.main, ["train.py", *flags]) == 0
    assert cli.invoke(eval_script.main, ["eval.py", *flags, "--checkpoint=latest"]) == 0
    out = tmp_path / "run" / "eval_latest"
    results = json.load(open(out / "eval_results.json"))
    confusion = np.asarray(results["confusion"])
    assert confusion.shape == (196, 196) and confusion.sum() == 6

    test_photos = tmp_path / "manual" / "cars_test"
    capsys.readouterr()
    assert cli.invoke(predict_script.main, ["predict.py", *flags, "--checkpoint=latest", "--json",
                                            str(test_photos)], positional=True) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert [os.path.basename(p["image"]) for p in predicted] == sorted(os.listdir(test_photos))
    for p in predicted:
        probabilities = [t["probability"] for t in p["top"]]
        assert len(p["top"]) == 5 and probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
        assert all(t["name"] == NAMES[t["class"]] for t in p["top"])
        assert set(p["gates"]) == set(results["mean_gates"])
        assert sum(p["gates"].values()) == pytest.approx(1, abs=1e-5)  # softmax gates
        read_png(p["attention_png"])
    # predict.py and eval.py see the same photos the same way: the confusion matrix's columns and
    # diagonal are the predictions counted.
    top1 = {os.path.basename(p["image"]): p["top"][0]["class"] for p in predicted}
    counted = np.zeros((196, 196), int)
    for fname, cls in top1.items():
        counted[truth[fname], cls] += 1
    np.testing.assert_array_equal(confusion, counted)
    with open(out / "per_class_accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["examples"]) for r in rows[:3]] == [2, 2, 2] and rows[0]["name"] == NAMES[0]
    assert [int(r["correct"]) for r in rows[:3]] == [int(counted[c, c]) for c in range(3)]
    read_png(out / "confusion_matrix.png")
    read_png(out / "attention_masks.png")
    # User errors: one line, status 2, before the model is loaded.
    for extra, message in (([], "no images: name image files or folders"),
                           ([str(tmp_path / "nowhere.jpg")], "nowhere.jpg: no such image file or folder"),
                           ([str(tmp_path / "tfds")], "no .jpg/.jpeg/.png/.bmp/.gif files in this folder")):
        capsys.readouterr()
        assert cli.invoke(predict_script.main, ["predict.py", *flags, *extra], positional=True) == 2
        assert message in capsys.readouterr().err
    saved = json.load(open(tmp_path / "run" / "predictions" / "predictions.json"))  # the default --output_dir
    assert saved["predictions"] == predicted and saved["model"].endswith("step 4")  # 2 epochs of 9 // 4 steps


def test_predict_with_a_released_checkpoint_of_the_authors_code(tmp_path):
    """--released: the model and its settings from an authors' state dict (their cluttered-MNIST
    network here), predictions = that network applied to the images, counted here."""
    from configs import cluttered_mnist
    from test_weights import released_mnist_state_dict
    from wrna_jax.data import canvases
    from wrna_jax.predict import predict
    from wrna_jax.weights import load_released, save_safetensors

    path = str(tmp_path / "released.safetensors")
    save_safetensors(released_mnist_state_dict(3, 2, np.random.default_rng(0)), path)
    test = canvases.generate_split(canvases.CanvasSpec(num_train=1, num_validation=1, num_test=5), "test")
    os.makedirs(tmp_path / "canvases")
    for i, image in enumerate(test["image"]):
        Image.fromarray(image[..., 0]).save(tmp_path / "canvases" / f"{i}.png")
    config = cluttered_mnist.get_config()
    predicted = predict(config, [str(tmp_path / "canvases")], str(tmp_path / "out"), released=path, top_k=3)
    model, variables, _ = load_released(path)
    log_probs = np.asarray(jax.jit(model.apply)(variables, test["image"] / np.float32(255)).log_probs)
    assert [[t["class"] for t in p["top"]] for p in predicted] == np.argsort(-log_probs, axis=1)[:, :3].tolist()
    np.testing.assert_allclose([p["top"][0]["probability"] for p in predicted], np.exp(log_probs.max(1)), rtol=1e-5)
    assert all(p["top"][0]["name"] == str(p["top"][0]["class"]) for p in predicted)
    assert json.load(open(tmp_path / "out" / "predictions.json"))["model"] == f"released checkpoint {path}"
    read_png(predicted[0]["attention_png"])
