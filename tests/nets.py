"""Small test models: a CNN, a ResNet-like net (BatchNorm, in-place ReLU, `out += identity`), an MLP."""

import copy
from collections import OrderedDict

import torch
from torch import nn


def small_cnn(classes=3, channels=1):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, classes),
    ).eval()


class Block(nn.Module):
    def __init__(self, channels, inplace):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.inplace = inplace

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.inplace:
            out += identity
        else:
            out = out + identity
        return self.relu(out)


class ResNetLike(nn.Module):
    def __init__(self, inplace=True, classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6),
                                  nn.ReLU(inplace=inplace))
        self.layer1 = Block(6, inplace)
        self.layer2 = Block(6, inplace)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_like(inplace=True):
    """A ResNet-like net with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(1)
    return vary_batchnorm(ResNetLike(inplace)).eval()


def vary_batchnorm(net):
    """``net`` with every BatchNorm2d's running statistics, weight and bias drawn away from the identity."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return net


def twin(net):
    """The same weights with every in-place operation made out-of-place (for Captum)."""
    other = ResNetLike(inplace=False)
    other.load_state_dict(net.state_dict())
    return other.eval()


def mlp(inputs=10, hidden=16, classes=3, activation=nn.ReLU):
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(inputs, hidden), activation(), nn.Linear(hidden, classes)).eval()


class FunctionalAct(nn.Module):
    """An MLP whose activation is a functional call inside forward, not a module."""

    def __init__(self, fn, inputs=10, hidden=16, classes=3):
        super().__init__()
        torch.manual_seed(2)
        self.fc1, self.fc2, self.fn = nn.Linear(inputs, hidden), nn.Linear(hidden, classes), fn

    def forward(self, x):
        return self.fc2(self.fn(self.fc1(x)))


def gap_cnn(classes=3):
    """conv -> ReLU -> global average pool -> linear: the network CAM is defined for."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 7, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, classes),
    ).eval()


def smooth_cnn(classes=3):
    """A CNN with smooth activations, for quadrature-convergence tests."""
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Softplus(), nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(),
        nn.Flatten(), nn.Linear(4 * 8 * 8, classes),
    ).eval()


def double(net):
    return copy.deepcopy(net).double().eval()


def tanh_mlp(seed=0):
    """4 -> 5 (tanh) -> 3 classes, float64, eval mode: the influence tests' small smooth model."""
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict([("hidden", nn.Linear(4, 5)), ("act", nn.Tanh()),
                                      ("out", nn.Linear(5, 3))])).double().eval()


def labelled_vectors(n, seed, d=4, classes=3):
    """``n`` float64 vectors [n, d] and labels [n] in [0, classes), seeded."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=generator, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=generator))
