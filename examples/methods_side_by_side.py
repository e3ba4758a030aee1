"""Train a small CNN on real MNIST digits (bundled, no download) and draw every method's map.

    python examples/methods_side_by_side.py --out runs/demo
"""

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import gradaudit as ga
from gradaudit import data, models, train
from gradaudit.report import method_grid


def demo_cnn(epochs: int = 4):
    """The demo's CNN trained on 4,000 bundled MNIST digits (seed 0), and the other 1,000 as test images
    [1000, 1, 28, 28] with their labels [1000]."""
    torch.manual_seed(0)
    images, labels = data.mnist_digits()
    order = torch.randperm(len(images))
    images, labels = images[order].unsqueeze(1), labels[order]
    train_set = TensorDataset(images[:4000], labels[:4000])
    test_x, test_y = images[4000:], labels[4000:]

    start = time.perf_counter()
    net = train.fit(models.small_cnn(in_shape=(1, 28, 28), classes=10), train_set, epochs=epochs)
    print(f"trained in {time.perf_counter() - start:.1f}s; test accuracy "
          f"{train.accuracy(net, TensorDataset(test_x, test_y)):.3f}")
    return net, test_x, test_y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--examples", type=int, default=6)
    args = parser.parse_args()

    net, test_x, test_y = demo_cnn(args.epochs)

    x, y = test_x[: args.examples], test_y[: args.examples]
    methods = {
        "Saliency": ga.Saliency(),
        "Input x Grad": ga.InputXGradient(),
        "SmoothGrad": ga.SmoothGrad(ga.Saliency(), samples=50, noise=0.15),
        "IG": ga.IntegratedGradients(steps=50),
        "Guided BP": ga.GuidedBackprop(),
        "LRP": ga.LRP(),
        "Grad-CAM": ga.GradCAM("conv2"),
        "Grad-CAM++": ga.GradCAMPlusPlus("conv2"),
        "Score-CAM": ga.ScoreCAM("conv2"),
        "LayerCAM": ga.LayerCAM("conv2"),
        "XGrad-CAM": ga.XGradCAM("conv2"),
        "HiResCAM": ga.HiResCAM("conv2"),
        "Grad-CAM elem.": ga.GradCAMElementWise("conv2"),
        "EigenCAM": ga.EigenCAM("conv2"),
        "EigenGrad-CAM": ga.EigenGradCAM("conv2"),
        "Ablation-CAM": ga.AblationCAM("conv2"),
        "FullGrad": ga.FullGrad(),
        "NormGrad": ga.NormGrad("conv2"),
        "Combine": ga.Combine([ga.NormGrad("conv1"), ga.NormGrad("conv2")]),
        "Random": ga.Random(),
    }
    maps = {}
    for name, method in methods.items():
        start = time.perf_counter()
        maps[name] = method(net, x, target=y)
        print(f"{name:>12}: {1000 * (time.perf_counter() - start) / len(x):7.1f} ms/image")
    path = method_grid(x, maps, Path(args.out) / "methods.png", titles=[f"label {int(v)}" for v in y])
    print(f"heatmaps written to {path.resolve()}")


if __name__ == "__main__":
    main()
