"""Writes the golden files of tests/test_parity.py: what the PyTorch transcriptions of the authors'
networks (tests/torch_reference.py) compute for each parity setting (tests/parity.py).

    python tests/golden/make_golden.py            # all settings (needs torch)
    python tests/golden/make_golden.py mnist_ad1  # one

Each file also records the generated weights' checksums, the torch version and the machine.
"""

import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import parity  # noqa: E402
import torch_reference  # noqa: E402


def main(settings: list[str]) -> None:
    torch.set_num_threads(2)
    for setting in settings or [*parity.MNIST_SETTINGS, *parity.DEV_SETTINGS, *parity.CIFAR_SETTINGS]:
        fixture = torch_reference.torch_fixture(setting)
        fixture["weights_checksum"] = parity.weights_checksum(parity.state_dict(setting))
        fixture["meta:torch"] = np.asarray(torch.__version__)
        fixture["meta:machine"] = np.asarray(f"{platform.machine()} {platform.processor()}")
        path = parity.golden_path(setting)
        np.savez_compressed(path, **fixture)
        print(f"{setting}: {len(fixture)} arrays, {os.path.getsize(path) / 1024:.0f} KiB -> {path}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
