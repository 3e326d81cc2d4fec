"""Models for the benchmarks, in plain torch (torchvision cannot be imported beside this torch).

``resnet20``: the CIFAR ResNet of He et al., "Deep Residual Learning for Image Recognition"
(CVPR 2016, section 4.2): a 3x3 convolution to 16 channels, three stages of ``n`` basic
blocks with 16, 32 and 64 channels (the first block of stages 2 and 3 downsamples by a
stride-2 convolution), global average pooling and a linear classifier. Shortcuts are
option A: the identity, and where the shape changes a stride-2 subsampling with the extra
channels zero-padded (no parameters). ``n = 3`` is ResNet-20 (269,722 parameters with 10
classes), ``n = 1`` ResNet-8. Weights are initialized as in the paper (He / Kaiming normal
for convolutions and the classifier, BatchNorm at weight 1, bias 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "set_batchnorm_statistics"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and ReLU, and an option-A shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.stride = stride
        self.pad = channels - in_channels

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        # Option A: subsample, then zero-pad the new channels (half on each side).
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A CIFAR ResNet with ``6 n + 2`` layers (He et al. 2016, section 4.2)."""

    def __init__(
        self, n: int = 3, num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64)
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, in_channels = [], widths[0]
        for i, channels in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_channels, channels, stride))
                in_channels = channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def resnet20(num_classes: int = 10, n: int = 3, seed: int = 0) -> CifarResNet:
    """ResNet-20 (``n = 3``; ``n = 1`` gives ResNet-8), initialized from ``seed``.

    Returns
    -------
    CifarResNet
        The model, in train mode, with default BatchNorm running statistics.
    """
    torch.manual_seed(seed)
    return CifarResNet(n=n, num_classes=num_classes)


def set_batchnorm_statistics(model: nn.Module, batches: list[Tensor]) -> nn.Module:
    """Set BatchNorm running statistics from train-mode forwards over ``batches``.

    With ``momentum=None`` the running statistics become the cumulative mean over the
    batches (not the default exponential average from mean 0, variance 1), so an eval-mode
    model normalizes with the data's own statistics. Parameters are not touched.

    Returns
    -------
    nn.Module
        ``model``, in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()
