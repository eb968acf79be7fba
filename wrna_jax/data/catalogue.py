"""The project's datasets (TFDS catalogue datasets, the manual-download builders of this package,
and cluttered MNIST, generated here)."""

from wrna_jax.data.registry import DatasetSpec, register_dataset

# Both CIFARs are normalised with CIFAR-10's statistics, (125.3, 123.0, 113.9) / 255 and
# (63.0, 62.1, 66.7) / 255, as the authors' (and Zagoruyko's) training scripts did.
CIFAR_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))

for spec in (
    DatasetSpec("cluttered_mnist", 10, "cluttered_mnist", eval_split="validation",
                prepare="wrna_jax.data.cluttered_mnist:prepare", arrays="wrna_jax.data.canvases:split_arrays"),
    # Generated with numpy, shaped like Stanford Dogs (data/synthetic.py): device feed only.
    DatasetSpec("synthetic_dogs", 120, "fine_grained", arrays="wrna_jax.data.synthetic:generate", host_feed=False),
    # Fine-grained: no official validation split; the released code evaluated on test.
    DatasetSpec("stanford_dogs", 120, "fine_grained", bbox_key="objects/bbox"),
    DatasetSpec("caltech_birds2011", 200, "fine_grained", bbox_key="bbox"),
    DatasetSpec("cars196", 196, "fine_grained", bbox_key="bbox",
                unavailable_hint="TFDS's Stanford Cars URLs answer 404 (tensorflow/datasets#5053, #5656): "
                                 "build it from the official devkit files instead with "
                                 "--config=configs/cars.py:manual (README, 'Stanford Cars')."),
    DatasetSpec("stanford_cars", 196, "fine_grained", bbox_key="bbox", module="wrna_jax.data.stanford_cars"),
    DatasetSpec("food101", 101, "fine_grained", eval_split="validation", test_split="validation"),
    DatasetSpec("uec_food100", 100, "fine_grained", tfds_name="uec_food100/fold{fold}",
                module="wrna_jax.data.uec_food100"),
    DatasetSpec("adience_age", 8, "fine_grained", tfds_name="adience/age_fold{fold}", module="wrna_jax.data.adience"),
    DatasetSpec("adience_gender", 2, "fine_grained", tfds_name="adience/gender_fold{fold}",
                module="wrna_jax.data.adience"),
    DatasetSpec("cifar10", 10, "cifar", mean=CIFAR_MEAN, std=CIFAR_STD),
    DatasetSpec("cifar100", 100, "cifar", mean=CIFAR_MEAN, std=CIFAR_STD),
):
    register_dataset(spec)
