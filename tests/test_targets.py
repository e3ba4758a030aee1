"""ga.targets: each target equals its formula, and a method given it differentiates that formula."""

import re

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close_rel, assert_unchanged, snapshot
from torch import nn

import gradaudit as ga

Segmentation, Similarity, TimeStep = ga.targets.Segmentation, ga.targets.Similarity, ga.targets.TimeStep

B = 3


def seeded(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def segmenter():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 4, 3, padding=1)).eval()


@pytest.fixture
def embedder():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 6)).eval()


class Running(nn.Module):
    """[B, T, F] -> [B, T, K]: a linear read-out of the running sum, so step t sees steps 0..t only."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.read = nn.Linear(5, 3)

    def forward(self, x):
        return self.read(torch.tanh(x.cumsum(1)))


def autograd_of(model, x, formula):
    """d formula(model(x)).sum() / dx, the per-example input gradient of the formula."""
    leaf = x.clone().requires_grad_(True)
    return torch.autograd.grad(formula(model(leaf)).sum(), leaf)[0]


def test_segmentation_is_the_class_output_summed_over_the_mask(segmenter):
    x, mask, cls = seeded(B, 3, 8, 8), seeded(B, 8, 8, seed=1) > 0.5, torch.tensor([0, 3, 1])
    before = snapshot(segmenter)
    with torch.no_grad():
        out = segmenter(x)
    target = Segmentation(cls, mask)
    assert_close_rel(target(out), (out[torch.arange(B), cls] * mask).sum((1, 2)))
    shared = Segmentation(2, mask[0])
    assert_close_rel(shared(out), (out[:, 2] * mask[0]).sum((1, 2)))
    predicted = out.argmax(1) == 2
    assert predicted.sum() > 0
    assert_close_rel(Segmentation(2)(out), (out[:, 2] * predicted).sum((1, 2)))

    for t, formula in [(target, lambda o: (o[torch.arange(B), cls] * mask).sum((1, 2))),
                       (Segmentation(2), lambda o: (o[:, 2] * (o.detach().argmax(1) == 2)).sum((1, 2)))]:
        expected = autograd_of(segmenter, x, formula)
        assert expected.abs().amax() > 1e-3
        assert_close_rel(ga.Saliency(abs=False)(segmenter, x, target=t), expected)
    assert_unchanged(segmenter, before)


def test_segmentation_follows_each_examples_mask_across_samples(segmenter):
    """IntegratedGradients runs 16 rows per example in chunks of 5 rows that straddle examples:
    each row must be scored with its own example's class and mask, or completeness breaks."""
    x, mask, cls = seeded(B, 3, 8, 8), seeded(B, 8, 8, seed=1) > 0.5, torch.tensor([0, 3, 1])
    target = Segmentation(cls, mask)
    attr, gap = ga.IntegratedGradients(steps=16).with_delta(segmenter, x, target, batch_size=5)
    with torch.no_grad():
        change = target(segmenter(x)) - target(segmenter(torch.zeros_like(x)))
    assert change.abs().min() > 1e-2
    assert (gap.abs() < 1e-3 * change.abs()).all(), (gap, change)


def test_similarity_is_the_cosine_to_the_reference(embedder):
    x, reference = seeded(B, 10), seeded(6, seed=2) - 0.5
    per_example = seeded(B, 6, seed=3) - 0.5
    before = snapshot(embedder)
    with torch.no_grad():
        out = embedder(x)
    for ref in (reference, per_example):
        expected = F.cosine_similarity(out, ref.expand(B, 6), dim=1)
        assert_close_rel(Similarity(ref)(out), expected)
        grad = autograd_of(embedder, x, lambda o, ref=ref: F.cosine_similarity(o, ref.expand(B, 6), dim=1))
        assert grad.abs().amax() > 1e-3
        assert_close_rel(ga.Saliency(abs=False)(embedder, x, target=Similarity(ref)), grad)
    # SmoothGrad selects the target's rows per chunk (Target.select): each example keeps its reference.
    smooth = ga.SmoothGrad(ga.Saliency(abs=False), samples=4, noise=0.0)(embedder, x, Similarity(per_example),
                                                                         batch_size=2)
    assert_close_rel(smooth, ga.Saliency(abs=False)(embedder, x, Similarity(per_example)))
    assert_unchanged(embedder, before)


@pytest.mark.parametrize("t", [2, -1])
def test_timestep_is_one_class_output_at_one_step(t):
    model = Running().eval()
    x, cls = seeded(B, 6, 5) - 0.5, torch.tensor([2, 0, 1])
    before = snapshot(model)
    with torch.no_grad():
        out = model(x)
    assert_close_rel(TimeStep(t, cls)(out), out[torch.arange(B), t, cls])
    assert_close_rel(TimeStep(t, 1)(out), out[:, t, 1])
    grad = ga.Saliency(abs=False)(model, x, target=TimeStep(t, cls))
    assert_close_rel(grad, autograd_of(model, x, lambda o: o[torch.arange(B), t, cls]))
    step = t % 6
    assert (grad[:, step + 1:] == 0).all() and grad[:, :step + 1].abs().amin() > 0   # only steps 0..t matter
    assert_unchanged(model, before)


def test_targets_refuse_outputs_of_the_wrong_shape(segmenter, embedder):
    x = seeded(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"Segmentation needs a model output \[batch, classes, height, width\]; "
                                         r"got \[2, 6\]"):
        ga.Saliency()(embedder, seeded(2, 10), target=Segmentation(0))
    with pytest.raises(ValueError, match="target class 4 is out of range for a model with 4 outputs"):
        ga.Saliency()(segmenter, x, target=Segmentation(4))
    with pytest.raises(ValueError, match=r"Segmentation mask has shape \[2, 5, 5\]; the output's maps are \[8, 8\]"):
        ga.Saliency()(segmenter, x, target=Segmentation(0, torch.ones(2, 5, 5)))
    with pytest.raises(ValueError, match=r"Similarity needs a model output \[batch, 5\]"):
        ga.Saliency()(embedder, seeded(2, 10), target=Similarity(torch.ones(5)))
    with pytest.raises(ValueError, match=r"TimeStep t=6 is out of range for an output of 6 time steps"):
        ga.Saliency()(Running().eval(), seeded(2, 6, 5), target=TimeStep(6, 0))
    with pytest.raises(TypeError, match="TimeStep t must be an int"):
        TimeStep(1.5, 0)


class Detector(nn.Module):
    """A toy detector with torchvision's output format: two anchor boxes moved by a linear head of the
    image, labels 1 and 2, sigmoid scores."""

    ANCHORS = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        z = self.head(x.flatten(1))
        return [{"boxes": self.ANCHORS + 0.1 * r[:8].view(2, 4), "labels": torch.tensor([1, 2]),
                 "scores": r[8:].sigmoid()} for r in z]


def iou(a, b):
    """IoU of two boxes by hand."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_box_score_is_iou_plus_score_of_the_matching_box_and_a_method_differentiates_it():
    model, x = Detector().eval(), seeded(B, 1, 4, 4)
    before = snapshot(model)
    reference = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.2, 1.0, 3.0, 3.1]])
    target = ga.targets.BoxScore(reference, torch.tensor([1, 2]))
    output = model(x)
    expected = torch.tensor([sum(iou(reference[k].tolist(), o["boxes"][k].tolist()) + o["scores"][k].item()
                                 for k in range(2)) for o in output])
    assert torch.allclose(target(output), expected, atol=1e-6)
    xx = x.clone().requires_grad_()
    truth, = torch.autograd.grad(target(model(xx)).sum(), xx)
    assert torch.allclose(ga.Saliency(abs=False)(model, x, target=target), truth, atol=1e-6)
    assert_unchanged(model, before)


def grad_cam_box_score(output, labels, bounding_boxes, iou_threshold=0.5):
    """pytorch-grad-cam's ``FasterRCNNBoxScoreTarget.__call__`` (pytorch_grad_cam/utils/model_targets.py),
    transcribed for one image's output dict (``box_iou`` for torchvision's): per reference box, the predicted
    box of highest IoU counts, IoU + its score, when that IoU is > the threshold and its label is the reference's."""
    result = torch.tensor([0.0], dtype=torch.float64)
    if len(output["boxes"]) == 0:
        return result
    for box, label in zip(bounding_boxes, labels, strict=True):
        ious = ga.targets.box_iou(box[None, :], output["boxes"])
        index = ious.argmax()
        if ious[0, index] > iou_threshold and output["labels"][index] == label:
            result = result + ious[0, index] + output["scores"][index]
    return result


def test_box_score_follows_pytorch_grad_cam_best_box_then_label_and_strict_threshold():
    """Image 0: the best box of the reference has another label, a box of its label overlaps it with IoU 0.83
    (it does not stand in); image 1: IoU exactly 0.5 (not > 0.5); image 2: both references matched."""
    d = torch.float64
    reference = torch.tensor([[0.0, 0.0, 2.0, 2.0], [4.0, 4.0, 6.0, 6.0]], dtype=d)
    labels = torch.tensor([2, 1])
    outputs = [{"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.4]], dtype=d),
                "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.9, 0.8], dtype=d)},
               {"boxes": torch.tensor([[0.0, 0.0, 2.0, 1.0], [4.0, 4.0, 6.0, 5.0]], dtype=d),
                "labels": torch.tensor([2, 1]), "scores": torch.tensor([0.7, 0.6], dtype=d)},
               {"boxes": torch.tensor([[4.0, 4.0, 6.0, 5.5], [0.1, 0.0, 2.0, 2.0]], dtype=d),
                "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.5, 0.4], dtype=d)}]
    expected = torch.cat([grad_cam_box_score(o, labels, reference) for o in outputs])
    assert expected[0] == expected[1] == 0 and expected[2] > 0
    with pytest.warns(UserWarning, match="box of highest IoU has IoU > 0.5 and the same label") as caught:
        got = ga.targets.BoxScore(reference, labels)(outputs)
    assert [re.search(r"image (\d+)", str(w.message))[1] for w in caught] == ["0", "1"]
    assert torch.allclose(got, expected, rtol=1e-12)
    with pytest.raises(ValueError, match=r"iou must be a threshold in \[0, 1\)"):
        ga.targets.BoxScore(reference, labels, iou=1.0)


def test_box_score_warns_when_nothing_matches():
    model, x = Detector().eval(), seeded(B, 1, 4, 4)
    wrong_label = ga.targets.BoxScore(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([2]))
    with pytest.warns(UserWarning, match="no predicted box matches"):
        assert torch.equal(wrong_label(model(x)), torch.zeros(B))
    far = ga.targets.BoxScore(torch.tensor([[10.0, 10.0, 12.0, 12.0]]), torch.tensor([1]))
    with pytest.warns(UserWarning, match="IoU > 0.5"):
        assert torch.equal(far(model(x)), torch.zeros(B))


def test_box_score_follows_each_images_boxes_across_samples():
    model, x = Detector().eval(), seeded(2, 1, 4, 4)
    boxes = [torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]])]
    labels = [torch.tensor([1]), torch.tensor([2])]
    each = ga.targets.BoxScore(boxes, labels)
    method = ga.IntegratedGradients(steps=4)              # 4 rows per image: the boxes must follow the rows
    together = method(model, x, target=each)
    for i in range(2):
        alone = method(model, x[i:i + 1], target=ga.targets.BoxScore(boxes[i], labels[i]))
        assert torch.allclose(together[i:i + 1], alone, atol=1e-6)


def test_box_score_refuses_outputs_without_boxes_and_bad_references():
    target = ga.targets.BoxScore(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="detector's output"):
        target(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="boxes must be a tensor"):
        ga.targets.BoxScore(torch.zeros(3), torch.tensor([1]))
    with pytest.raises(ValueError, match="one label per box"):
        ga.targets.BoxScore(torch.zeros(2, 4), torch.tensor([1]))
