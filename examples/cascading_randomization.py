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

from methods_side_by_side import demo_cnn  # the methods demo's CNN, trained the same way
from torch.utils.data import TensorDataset

import gradaudit as ga
from gradaudit import audit


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

    net, test_x, test_y = demo_cnn(args.epochs)
    test = TensorDataset(test_x, test_y)
    print(f"{args.images} test images\n")

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
