"""PyTorch transcriptions of the authors' layer order (our own, written from docs/method.md and
their code at the commits it names), and what they compute for a parity setting (tests/parity.py).

* `MasterMnistNet`: models/attention_net.py and modules/attention.py at 4b8ed88 (one softmax per
  head) with the `g_out` gate module.
* `DevHeads`: the dev branch's attention modules, gate layer and classifier on given feature
  maps and pooled features (the WRN-50-2 backbone left out), with its aggregation rules; the
  regulariser on the full masks as at 0b671d5 (`pool=1`) or on 2x2-pooled ones as at 288ec61.
* `Ea7d4afCifarNet`: the CIFAR attention WRN of commit ea7d4af (models/wide_resnet_cifar_painless.py
  and modules/attention.py then): Zagoruyko's blocks and stem, each module before the last read
  through its own BatchNorm-ReLU, the regulariser on full masks; train_cifar_attention.py's SGD
  without Nesterov.

The regulariser is ours (docs/method.md: the mean over the modules); the master branch's own loop
averages a different subset of modules. Needs torch; tests skip when it is not installed.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import parity


def _reg(masks: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """mean over (batch, K, K) of the squared off-diagonal Gram entries of (B, K, H, W) masks."""
    flat = masks.reshape(masks.size(0), masks.size(1), -1)
    return ((torch.bmm(flat, flat.transpose(1, 2)) * diag) ** 2).mean()


class Gate(nn.Module):
    def __init__(self, in_ch: int, gates: int = 1):
        super().__init__()
        self.gate = nn.Linear(in_ch, gates, bias=False)
        self.bn = nn.BatchNorm1d(gates)

    def forward(self, x):
        return torch.tanh(self.bn(self.gate(x)))


class AttentionHead(nn.Module):
    def __init__(self, in_ch: int, heads: int):
        super().__init__()
        self.heads = heads
        self.conv = nn.Conv2d(in_ch, heads, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm1d(in_ch)  # the released BatchNorm2d, fed (b*K, c, h*w)
        self.register_buffer("diag", torch.from_numpy(1 - np.eye(heads).reshape(1, heads, heads)).float())

    def forward(self, x):
        b, c, h, w = x.size()
        self.mask = F.softmax(self.conv(x).view(b, self.heads, h * w), 2).view(b, self.heads, h, w)
        attended = x.view(b, 1, c, h, w) * self.mask.view(b, self.heads, 1, h, w)
        return self.bn(attended.view(b * self.heads, c, h * w))


class OutputHead(nn.Module):
    def __init__(self, in_ch: int, h: int, w: int, classes: int):
        super().__init__()
        self.F = nn.Linear(in_ch * h * w, in_ch, bias=False)
        self.bn = nn.BatchNorm1d(in_ch)
        self.out = nn.Linear(in_ch, classes)
        self.gate = Gate(in_ch)

    def forward(self, x):
        x = self.bn(F.relu(self.F(x.contiguous().view(x.size(0), -1))))
        return self.out(x), self.gate(x)


class MasterModule(nn.Module):
    def __init__(self, in_ch: int, h: int, w: int, classes: int, heads: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(in_ch, in_ch // 2, 1, bias=False)
        self.conv_bn = nn.BatchNorm2d(in_ch // 2)
        self.heads = heads
        self.atthead = AttentionHead(in_ch // 2, heads)
        for i in range(heads):
            setattr(self, f"outhead_{i}", OutputHead(in_ch // 2, h, w, classes))

    def forward(self, x):
        x = self.conv_bn(self.conv_reduce(x))
        b, c, h, w = x.size()
        attended = self.atthead(x).view(b, self.heads, c, h, w)
        outs, gates = zip(*(getattr(self, f"outhead_{i}")(attended[:, i]) for i in range(self.heads)))
        return [o.view(b, 1, -1) for o in outs], [g.view(b, 1) for g in gates]

    def reg(self):
        return _reg(self.atthead.mask, self.atthead.diag)


class MasterMnistNet(nn.Module):
    def __init__(self, depth: int, heads: int):
        super().__init__()
        self.depth = depth
        self.bn1 = nn.BatchNorm2d(1)
        for i, (out, inp, k, pad) in enumerate([(32, 1, 5, 0), (64, 32, 3, 0), (128, 64, 3, 0),
                                                 (128, 128, 3, 1), (128, 128, 3, 0)], start=1):
            setattr(self, f"conv{i}", nn.Conv2d(inp, out, k, padding=pad, bias=False))
            setattr(self, f"bn{i + 1}", nn.BatchNorm2d(out))
            if i >= 6 - depth:
                c, s = parity.MNIST_MAPS[i]
                setattr(self, f"att{i}", MasterModule(c, s, s, 10, heads))
        self.fc1 = nn.Linear(128 * 16, 256)
        self.bn7 = nn.BatchNorm1d(256)
        self.fc2 = nn.Linear(256, 10)
        self.g_out = Gate(256)

    def forward(self, x):
        x = self.bn1(x)
        outputs, gates, modules = [], [], []
        for i in range(1, 6):
            y = getattr(self, f"conv{i}")(x)
            x = getattr(self, f"bn{i + 1}")(F.relu(F.max_pool2d(y, 2) if i <= 2 else y))
            if i >= 6 - self.depth:
                module = getattr(self, f"att{i}")
                o, g = module(x)
                outputs += o
                gates += g
                modules.append(module)
        x = self.bn7(F.relu(self.fc1(x.view(x.size(0), -1))))
        outputs.append(F.log_softmax(self.fc2(x), 1).view(x.size(0), 1, -1))
        gates.append(self.g_out(x))
        if not modules:  # AD = 0: the plain CNN
            return outputs[-1].view(x.size(0), -1), torch.zeros(())
        outputs = F.log_softmax(torch.cat(outputs, 1), dim=2)
        log_probs = (outputs * F.softmax(torch.cat(gates, 1), 1).unsqueeze(2)).sum(1)
        return log_probs, torch.stack([m.reg() for m in modules]).mean()


class DevModule(nn.Module):
    def __init__(self, in_ch: int, classes: int, heads: int, pool: int = 2):
        super().__init__()
        self.heads, self.classes, self.pool = heads, classes, pool
        self.att_head = nn.Module()
        self.att_head.conv = nn.Conv2d(in_ch, heads, 3, padding=1, bias=False)
        self.att_head.register_buffer("diag", torch.from_numpy(1 - np.eye(heads).reshape(1, heads, heads)).float())
        self.out_head = nn.Module()
        self.out_head.conv = nn.Conv2d(in_ch, heads * classes, 3, padding=1, bias=False)
        self.score = nn.Module()
        self.score.conv = nn.Conv2d(in_ch, heads, 3, padding=1, bias=False)

    def forward(self, x):
        b, c, h, w = x.size()
        mask = F.softmax(self.att_head.conv(x).view(b, self.heads, w * h), 2).view(b, self.heads, h, w)
        self.pooled_mask = F.avg_pool2d(mask, 2, 2) if self.pool == 2 else mask
        mask = mask.view(b, self.heads, 1, h * w)
        output = (self.out_head.conv(x).view(b, self.heads, self.classes, h * w) * mask).sum(3)
        scores = (self.score.conv(x).view(b, self.heads, 1, h * w) * mask).sum(3)
        scores = F.softmax(torch.tanh(scores), 1)
        return (output * scores).sum(1, keepdim=True)

    def reg(self):
        return _reg(self.pooled_mask, self.att_head.diag)


class DevHeads(nn.Module):
    def __init__(self, classes: int, heads: int, gate_fn: str, output: str, pool: int):
        super().__init__()
        self.gate_fn, self.output = gate_fn, output
        for i, layer in enumerate(("layer1", "layer2", "layer3")):
            setattr(self, f"att{i}", DevModule(parity.DEV_CHANNELS[layer], classes, heads, pool))
        self.output_gate = nn.Module()
        gates = 3 + (output == "all")
        self.output_gate.gates = nn.Linear(2048, gates, bias=False)
        self.output_gate.bn = nn.BatchNorm1d(gates)
        self.linear = nn.Linear(2048, classes)

    def forward(self, maps):
        outputs = [getattr(self, f"att{i}")(maps[layer]) for i, layer in enumerate(("layer1", "layer2", "layer3"))]
        pooled = maps["pooled"]
        gates = torch.tanh(self.output_gate.bn(self.output_gate.gates(pooled)))
        if self.output == "all":
            outputs.append(self.linear(pooled).view(pooled.size(0), 1, -1))
        outputs = F.log_softmax(torch.cat(outputs, 1), dim=2)
        if self.gate_fn == "softmax":
            combined = (outputs * F.softmax(gates, 1).view(gates.size(0), -1, 1)).sum(1)
        else:
            gates = torch.sigmoid(gates).view(gates.size(0), -1, 1)
            combined = (outputs * gates).sum(1) / (1e-6 + gates.sum(1))
        if self.output == "50":
            combined = (combined + F.log_softmax(self.linear(pooled), dim=1)) / 2.0
        reg = torch.stack([getattr(self, f"att{i}").reg() for i in range(3)]).mean()
        return combined, reg


class DevMnistNet(MasterMnistNet):
    """The cluttered-MNIST CNN with the dev branch's modules at the deepest `depth` convolutions
    and its gate layer over them and the classifier (softmax gates, output rule 'all'): the
    compute of our `attend_rectify` preset on this backbone, for benchmarks/train_step.py."""

    def __init__(self, depth: int, heads: int):
        super().__init__(0, heads)
        self.dev_depth = depth
        for i in range(6 - depth, 6):
            setattr(self, f"att{i}", DevModule(parity.MNIST_MAPS[i][0], 10, heads))
        self.output_gate = nn.Module()
        self.output_gate.gates = nn.Linear(256, depth + 1, bias=False)
        self.output_gate.bn = nn.BatchNorm1d(depth + 1)

    def forward(self, x):
        x = self.bn1(x)
        outputs, modules = [], []
        for i in range(1, 6):
            y = getattr(self, f"conv{i}")(x)
            x = getattr(self, f"bn{i + 1}")(F.relu(F.max_pool2d(y, 2) if i <= 2 else y))
            if i >= 6 - self.dev_depth:
                modules.append(getattr(self, f"att{i}"))
                outputs.append(modules[-1](x))
        pooled = self.bn7(F.relu(self.fc1(x.view(x.size(0), -1))))
        outputs.append(self.fc2(pooled).view(x.size(0), 1, -1))
        gates = F.softmax(torch.tanh(self.output_gate.bn(self.output_gate.gates(pooled))), 1)
        log_probs = (F.log_softmax(torch.cat(outputs, 1), dim=2) * gates.unsqueeze(2)).sum(1)
        return log_probs, torch.stack([m.reg() for m in modules]).mean()


class ZagoruykoBlock(nn.Module):
    """BN-ReLU, conv3x3, BN-ReLU, conv3x3; the 1x1 projection reads the pre-activated input."""

    def __init__(self, ni: int, no: int, stride: int):
        super().__init__()
        self.bn0, self.conv0 = nn.BatchNorm2d(ni), nn.Conv2d(ni, no, 3, stride, 1, bias=False)
        self.bn1, self.conv1 = nn.BatchNorm2d(no), nn.Conv2d(no, no, 3, 1, 1, bias=False)
        if ni != no:
            self.conv_reduce = nn.Conv2d(ni, no, 1, stride, bias=False)

    def forward(self, x):
        pre = F.relu(self.bn0(x))
        y = self.conv1(F.relu(self.bn1(self.conv0(pre))))
        return y + (self.conv_reduce(pre) if hasattr(self, "conv_reduce") else x)


class Ea7d4afCifarNet(nn.Module):
    def __init__(self, depth: int, width: int, classes: int, heads: int):
        super().__init__()
        widths = [16 * width * 2 ** g for g in range(3)]
        self.conv0 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        inp = 16
        for g, out in enumerate(widths):
            group = nn.Module()
            for i in range((depth - 4) // 6):
                setattr(group, f"block_{i}", ZagoruykoBlock(inp if i == 0 else out, out, 2 if g and not i else 1))
            setattr(self, f"group_{g}", group)
            inp = out
        self.bn = nn.BatchNorm2d(inp)
        self.classifier = nn.Linear(inp, classes)
        for g, c in enumerate(widths):
            setattr(self, f"att{g}", DevModule(c, classes, heads, pool=1))
            setattr(self, f"pre_bn{g}", nn.BatchNorm2d(c))
        self.output_gate = nn.Module()
        self.output_gate.gates = nn.Linear(inp, 4, bias=False)
        self.output_gate.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        x = self.conv0(x)
        outputs = []
        for g in range(3):
            group = getattr(self, f"group_{g}")
            for block in group.children():
                x = block(x)
            if g == 2:
                x = F.relu(self.bn(x))
                outputs.append(self.att2(x))
            else:
                outputs.append(getattr(self, f"att{g}")(F.relu(getattr(self, f"pre_bn{g}")(x))))
        pooled = x.mean((2, 3))
        gates = torch.tanh(self.output_gate.bn(self.output_gate.gates(pooled)))
        outputs.append(self.classifier(pooled).view(pooled.size(0), 1, -1))
        log_probs = (F.log_softmax(torch.cat(outputs, 1), dim=2) * F.softmax(gates, 1).unsqueeze(2)).sum(1)
        return log_probs, torch.stack([getattr(self, f"att{g}").reg() for g in range(3)]).mean()


def network(setting: str) -> nn.Module:
    if setting in parity.CIFAR_SETTINGS:
        s = parity.CIFAR_SETTINGS[setting]
        return Ea7d4afCifarNet(s["depth"], s["width"], s["classes"], s["heads"])
    if setting in parity.MNIST_SETTINGS:
        s = parity.MNIST_SETTINGS[setting]
        return MasterMnistNet(s["depth"], s["heads"])
    s = parity.DEV_SETTINGS[setting]
    return DevHeads(s["classes"], s["heads"], s["gate_fn"], s["output"], s["pool"])


def _inputs(setting: str, batch: Mapping[str, np.ndarray]) -> Any:
    if "image" in batch:
        return torch.from_numpy(np.ascontiguousarray(batch["image"].transpose(0, 3, 1, 2)))
    maps = {k: torch.from_numpy(np.ascontiguousarray(batch[k].transpose(0, 3, 1, 2))) for k in parity.DEV_CHANNELS}
    maps["pooled"] = torch.from_numpy(batch["pooled"])
    return maps


def _optimizer(setting: str, net: nn.Module) -> torch.optim.Optimizer:
    if setting in parity.CIFAR_SETTINGS:  # train_cifar_attention.py at ea7d4af
        return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    if setting in parity.MNIST_SETTINGS:  # train_mnist.py at 4b8ed88
        return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-5)
    # train_resnet.py at 288ec61: modules, gate layer and classifier at the head learning rate
    return torch.optim.SGD(net.parameters(), lr=parity.DEV_SETTINGS[setting]["lr"], momentum=0.9,
                           weight_decay=1e-4, nesterov=True)


def torch_fixture(setting: str) -> dict[str, np.ndarray]:
    """What the PyTorch network computes for the setting, in our layout (tests/parity.py)."""
    torch.manual_seed(0)
    state_dict = parity.state_dict(setting)
    batches = parity.batches(setting)
    net = network(setting)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
    config, _, convert = parity.model_and_converter(setting)
    weight = 0.1 if config.attention.preset == "paper" else 1e-3
    to_numpy = lambda tensors: {k: v.detach().numpy().copy() for k, v in tensors.items()}

    out = {}
    with torch.no_grad():
        out["eval:log_probs"] = copy.deepcopy(net).eval()(_inputs(setting, batches[0]))[0].double().numpy()
    start = parity.flat(convert(state_dict)["params"], "params")
    momentum = parity.momentum_buffers(setting, state_dict, parity.parameter_keys(setting))
    for i, batch in enumerate(batches, start=1):
        net.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
        net.train()
        optimizer = _optimizer(setting, net)
        if i == 2:  # the second state: the same weights with a momentum buffer
            for name, p in net.named_parameters():
                optimizer.state[p]["momentum_buffer"] = torch.from_numpy(momentum[name].copy())
        optimizer.zero_grad()
        log_probs, reg = net(_inputs(setting, batch))
        loss = F.nll_loss(log_probs, torch.from_numpy(batch["label"]).long()) + weight * reg
        loss.backward()
        if i == 1:
            out["train:regularizer"] = np.asarray(reg.item())
            out["train:loss"] = np.asarray(loss.item())
            grads = {**to_numpy(net.state_dict()),
                     **{k: p.grad.numpy().copy() for k, p in net.named_parameters() if p.grad is not None}}
            out.update(parity.summarise("grad", parity.flat(convert(grads)["params"], "params")))
        optimizer.step()
        after = convert(to_numpy(net.state_dict()))
        moved = {name: value - start[name] for name, value in parity.flat(after["params"], "params").items()}
        out.update(parity.summarise(f"step{i}", moved))
        out.update(parity.summarise(f"step{i}", parity.flat(after["batch_stats"], "batch_stats")))
    return out


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3 convolution)."""

    def __init__(self, inp: int, width: int, out: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(inp, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out)
        self.downsample = (nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                           if stride != 1 or inp != out else None)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class WideResNet50_2(nn.Module):
    """torchvision's `wide_resnet50_2` layout (its module names), for benchmarks/model_cost.py."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        layers, inp = [], 64
        for i, blocks in enumerate((3, 4, 6, 3)):
            width, out = 128 * 2 ** i, 256 * 2 ** i  # wide: 2x the bottleneck width, same outputs
            layers.append(nn.Sequential(*[Bottleneck(inp if b == 0 else out, width, out, 2 if b == 0 and i > 0 else 1)
                                          for b in range(blocks)]))
            inp = out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
