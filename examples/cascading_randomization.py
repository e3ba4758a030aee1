"""Cascading model-parameter randomization (Adebayo et al. 2018) over every image method, on the demo CNN.

Trains the methods demo's CNN on real MNIST digits (bundled, no download), re-initialises its layers from the output
down, one more at a time, and prints each method's Spearman rank correlation with its map on the trained model, the
mean over images with its 95% interval. A method that explains the model falls towards 0 as layers are randomized;
one that stays high explains the input (the paper: Guided Backprop and Guided Grad-CAM stay similar, gradients and
Grad-CAM do not).

    python examples/cascading_randomization.py --images 64
"""

import argparse
import time

import torch
from torch.utils.data import TensorDataset

import gradaudit as ga
from gradaudit import audit, data, models, train


def family() -> dict:
    """Every image method the library has, at the demo CNN's last conv layer where a layer is needed."""
    layer = "conv2"
    return {
        "Saliency": ga.Saliency(),
        "Input x Grad": ga.InputXGradient(),
        "SmoothGrad": ga.SmoothGrad(ga.Saliency(), samples=16, noise=0.15),
        "IG": ga.IntegratedGradients(steps=16),
        "DeepLIFT": ga.DeepLift(),
        "Guided BP": ga.GuidedBackprop(),
        "Deconvnet": ga.Deconvnet(),
        "Grad-CAM": ga.GradCAM(layer),
        "Grad-CAM++": ga.GradCAMPlusPlus(layer),
        "Guided Grad-CAM": ga.GuidedGradCAM(layer),
        "NormGrad": ga.NormGrad(layer),
        "ScoreCAM": ga.ScoreCAM(layer),
        "LayerCAM": ga.LayerCAM(layer),
        "XGradCAM": ga.XGradCAM(layer),
        "HiResCAM": ga.HiResCAM(layer),
        "GradCAMElementWise": ga.GradCAMElementWise(layer),
        "EigenCAM": ga.EigenCAM(layer),
        "EigenGradCAM": ga.EigenGradCAM(layer),
        "AblationCAM": ga.AblationCAM(layer),
        "FullGrad": ga.FullGrad(),
        "LRP EpsilonPlus": ga.LRP(composite="EpsilonPlus"),
        "LRP EpsilonAlpha2Beta1": ga.LRP(composite="EpsilonAlpha2Beta1"),
        "Occlusion": ga.Occlusion(window=4, stride=4),
        "Sobel": ga.Sobel(),
        "Random": ga.Random(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    # the methods demo's recipe (examples/methods_side_by_side.py): seed 0, 4,000 training digits, 4 epochs
    torch.manual_seed(0)
    images, labels = data.mnist_digits()
    order = torch.randperm(len(images))
    images, labels = images[order].unsqueeze(1), labels[order]
    net = train.fit(models.small_cnn(in_shape=(1, 28, 28), classes=10), TensorDataset(images[:4000], labels[:4000]),
                    epochs=args.epochs)
    test = TensorDataset(images[4000:], labels[4000:])
    print(f"demo CNN: test accuracy {train.accuracy(net, test):.3f}; {args.images} test images\n")

    start = time.perf_counter()
    rows = audit.randomization(family(), net, test, limit=args.images).rows
    depths = sorted({row["depth"] for row in rows})
    names = {row["depth"]: row["randomized"].split("+")[-1] for row in rows}
    print("| method | " + " | ".join(f"+{names[d]}" for d in depths) + " |")
    print("|---|" + "---|" * len(depths))
    for method in dict.fromkeys(row["method"] for row in rows):
        cells = {row["depth"]: row for row in rows if row["method"] == method}
        print(f"| {method} | " + " | ".join(
            f"{cells[d]['spearman']:.2f} [{cells[d]['spearman_low']:.2f}, {cells[d]['spearman_high']:.2f}]"
            for d in depths) + " |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
