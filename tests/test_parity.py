"""Step-by-step parity with the authors' PyTorch code (tests/parity.py, tests/torch_reference.py):
our importer, model, loss, gradients, SGD step and BatchNorm statistics against the golden files
that tests/golden/make_golden.py wrote from PyTorch transcriptions of their networks, and, where
torch is installed, against those transcriptions live.

Tolerances (tests/numerics.py). Two float32 implementations sum in different orders: the
forward outputs may differ by Higham and Mary's probabilistic bound over the network's chained
reductions; gradients, updates and running statistics per tensor by that bound over the forward
and backward passes, plus four times their rounding noise on this machine (our computation
repeated with the batch's examples reordered: the same function summed in another order, which
is what matters for gradients with heavy cancellation), plus the rounding of storing the result.
A golden file's large tensors are projections (parity.projection): each projection of an error e
is at most ||e||, so the same bound applies to them.
"""

import numpy as np
import pytest

import parity
from numerics import U_FLOAT32, probable_error

# (longest reduction, chained reductions in the forward pass) of each network: the master MNIST
# CNN's input BatchNorm over 8 x 40 x 40 values through ~10 layers; the dev modules' 3x3
# convolutions over 1,024 x 9 inputs, their attention sums, the gate layer and the combination.
# The ea7d4af CIFAR WRN-10-1: 3x3 convolutions over up to 64 x 9 inputs and BatchNorms over
# 4 x 8 x 8 values, through ~14 layers (stem, 3 blocks, BN, module, gate, combination).
NETWORKS = {"mnist": (8 * 40 * 40, 10), "dev": (1024 * 9, 4), "cifar": (64 * 9, 14)}
NOISE_FACTOR = 4.0


def bounds(setting: str) -> tuple[float, float]:
    """(forward, backward) relative error bounds of the setting's network."""
    family = "mnist" if setting in parity.MNIST_SETTINGS else "cifar" if setting in parity.CIFAR_SETTINGS else "dev"
    n, layers = NETWORKS[family]
    return probable_error(n, layers), probable_error(n, 2 * layers)


def mismatches(ours: dict, reference: dict, noise: list[dict], setting: str) -> list[str]:
    """Every key of `reference` where `ours` differs by more than its tolerance (see above)."""
    forward, backward = bounds(setting)
    problems = []
    for key, ref in reference.items():
        if key.startswith("meta:") or key == "weights_checksum" or key.endswith(":norm"):
            continue
        ref, got = np.asarray(ref, np.float64), np.asarray(ours[key], np.float64)
        if key.startswith(("eval:", "train:")):
            difference = float(np.max(np.abs(got - ref)))
            tolerance = forward * float(np.max(np.abs(ref)))
        else:
            projected = key.endswith(":proj")
            size = float(reference[key[:-5] + ":norm"]) if projected else float(np.linalg.norm(ref))
            measure = (lambda e: float(np.max(np.abs(e)))) if projected else (lambda e: float(np.linalg.norm(e)))
            difference = measure(got - ref)
            spread = max(measure(np.asarray(other[key]) - got) for other in noise)
            tolerance = backward * size + NOISE_FACTOR * spread + 4 * U_FLOAT32 * size
            if projected:
                norm = float(ours[key[:-5] + ":norm"])
                if not abs(norm - size) <= tolerance:
                    problems.append(f"{key[:-5]}:norm {norm:.6e} vs {size:.6e} (tolerance {tolerance:.2e})")
        if not difference <= tolerance:
            problems.append(f"{key}: difference {difference:.3e} > tolerance {tolerance:.3e}")
    missing = sorted(set(reference) - set(ours) - {"weights_checksum"} - {k for k in reference if k.startswith("meta:")})
    return problems + [f"{key}: not computed" for key in missing]


@pytest.fixture(scope="module")
def computed():
    """Our fixture of each setting (and its reordered repeat), computed once for both tests."""
    cache = {}

    def get(setting):
        if setting not in cache:
            batches = parity.batches(setting)
            cache[setting] = parity.our_fixtures(setting, parity.state_dict(setting),
                                                 [batches, parity.reordered(batches, seed=1)])
        return cache[setting]

    return get


SETTINGS = [*parity.MNIST_SETTINGS, *parity.DEV_SETTINGS, *parity.CIFAR_SETTINGS]


@pytest.mark.parametrize("setting", SETTINGS)
def test_matches_the_golden_pytorch_fixture(setting, computed):
    golden = dict(np.load(parity.golden_path(setting)))
    # The weights the golden file was made from are the ones generated here.
    np.testing.assert_allclose(parity.weights_checksum(parity.state_dict(setting)), golden["weights_checksum"],
                               rtol=1e-9, atol=1e-9)
    ours, *noise = computed(setting)
    problems = mismatches(ours, golden, noise, setting)
    assert not problems, f"{setting}: {len(problems)} differences from PyTorch ({golden['meta:torch']}):\n  " + \
        "\n  ".join(problems)


@pytest.mark.parametrize("setting", SETTINGS)
def test_matches_pytorch_live(setting, computed):
    pytest.importorskip("torch")
    import torch_reference

    ours, *noise = computed(setting)
    problems = mismatches(ours, torch_reference.torch_fixture(setting), noise, setting)
    assert not problems, f"{setting}: {len(problems)} differences from PyTorch:\n  " + "\n  ".join(problems)
