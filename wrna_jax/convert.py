"""Converts PyTorch weights of a backbone into an orbax directory for `config.init_from`.

    python -m wrna_jax.convert wide_resnet50_2-95faca4d.pth ~/.cache/wrna_jax/wide_resnet50_2_imagenet1k_v1
    python -m wrna_jax.convert model.safetensors DST          # timm hub file: no torch needed

SRC: a .safetensors or .pth state dict of the backbone (--backbone, default imagenet_resnet:
a bottleneck ResNet such as resnet50 or wide_resnet50_2, torchvision or timm names).
DST: a new directory (orbax variables + wrna_backbone.json); an existing one is replaced only
with --force. The authors' painless-attention checkpoints are imported in Python instead
(wrna_jax.weights.load_released), see README.
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

from wrna_jax.errors import BadFileError, UserError
from wrna_jax.weights import files, pretrained, released


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wrna_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="torchvision/timm ResNet state dict (.safetensors or .pth)")
    parser.add_argument("dst", help="output directory for config.init_from")
    parser.add_argument("--force", action="store_true", help="replace DST if it is a converted backbone")
    parser.add_argument("--backbone", default="imagenet_resnet", help="the registered backbone the weights are for")
    args = parser.parse_args(argv)
    dst = os.path.abspath(os.path.expanduser(args.dst))
    if os.path.exists(dst) and not args.force:
        parser.error(f"{dst} already exists; pass --force to replace it.")
    try:
        pretrained.check_destination(dst, args.force)
        start = time.time()
        print(f"Reading {args.src} ...", flush=True)
        state_dict = files.load_state_dict(args.src)
        try:
            released.backbone_kind(state_dict)
            is_released = any(k.startswith(("att", "output_gate", "g_out")) for k in state_dict)
        except ValueError:
            is_released = False
        if is_released:
            raise BadFileError(f"{args.src} is a released painless-attention checkpoint, not an ImageNet "
                               "backbone: import it with wrna_jax.weights.load_released (see README).")
        print(f"  {len(state_dict)} tensors, {sum(v.size for v in state_dict.values()):,} values. "
              "Converting ...", flush=True)
        description, variables = pretrained.convert_backbone(state_dict, args.backbone, os.path.abspath(args.src))
        num_params = sum(int(np.size(v)) for v in jax.tree.leaves(variables["params"]))
        shown = ", ".join(f"{k} {v}" for k, v in description.items() if k != "source")
        print(f"  {shown}; {num_params:,} parameters. Writing {dst} ...", flush=True)
        pretrained.save_backbone(description, variables, dst, force=args.force)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Done in {time.time() - start:.1f} s. Use it with --config.init_from={dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
