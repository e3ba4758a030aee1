"""Neuron activation profiles on a model whose channels are known, multilabel data, resume from the
store; label targets on a sigmoid-output (multilabel) model against the analytic gradient."""

import copy
from collections import OrderedDict

import torch
from torch import nn

import gradaudit as ga
from gradaudit.audit import activation_profiles
from gradaudit.store import Store


def known_channels():
    """Channel 0 copies the input, channel 1 negates it (a 1x1 convolution)."""
    feat = nn.Conv2d(1, 2, 1, bias=False)
    feat.weight.data = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
    return nn.Sequential(OrderedDict(feat=feat, flat=nn.Flatten(), head=nn.Linear(2 * 16, 2))).eval()


def test_profiles_of_known_channels(tmp_path):
    x = torch.cat([torch.full((3, 1, 4, 4), 0.2), torch.full((5, 1, 4, 4), 0.8)])
    y = torch.tensor([0] * 3 + [1] * 5)
    store = Store(tmp_path / "s.sqlite")
    net = known_channels()
    rows = activation_profiles(net, (x, y), "feat", store=store, model_name="m").rows
    assert [r["examples"] for r in rows] == [3, 5]
    assert torch.allclose(torch.tensor(rows[0]["raw"]), torch.tensor([0.2, -0.2]), atol=1e-6)
    assert rows[0]["profile"] == [0.0, 1.0] and rows[1]["profile"] == [1.0, 0.0]      # min-max across classes
    assert rows[0]["nearest"] == 1 and abs(rows[0]["nearest_distance"] - 1.0) < 1e-12
    again = activation_profiles(net, (x.clone(), y), "feat", store=store, model_name="m")   # read back
    assert again.rows == rows and len(store.rows("activation_profiles")) == 2
    changed = copy.deepcopy(net)
    changed.feat.weight.data *= 2
    other = activation_profiles(changed, (x, y), "feat", store=store, model_name="m")   # same name, other weights
    assert torch.allclose(torch.tensor(other.rows[0]["raw"]), torch.tensor([0.4, -0.4]), atol=1e-6)
    assert len(store.rows("activation_profiles")) == 4
    store.close()
    assert again.plot() is not None


def test_profiles_of_multilabel_data():
    x = torch.stack([torch.full((1, 4, 4), v) for v in (0.1, 0.5, 0.9)])
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0]])                    # label 2 never occurs
    rows = activation_profiles(known_channels(), (x, labels), "feat").rows
    assert [r["examples"] for r in rows] == [2, 2, 0]
    assert abs(rows[0]["raw"][0] - 0.3) < 1e-6 and abs(rows[1]["raw"][0] - 0.7) < 1e-6
    assert rows[2]["profile"] is None and rows[0]["nearest"] == 1


def test_label_targets_on_a_sigmoid_output_model():
    torch.manual_seed(0)
    linear = nn.Linear(6, 4).double()
    model = nn.Sequential(linear, nn.Sigmoid()).eval()
    x = torch.randn(5, 6, dtype=torch.float64)
    z = linear(x).detach()
    for label in range(4):
        slope = torch.sigmoid(z[:, label]) * (1 - torch.sigmoid(z[:, label]))
        expected = slope[:, None] * linear.weight[label].detach()
        assert torch.allclose(ga.Saliency(abs=False)(model, x, label), expected, atol=1e-12)
    logits = nn.Sequential(linear).eval()                          # explaining logits avoids saturation
    contrast = ga.Saliency(abs=False)(logits, x, ga.Contrast(1, 3))
    assert torch.allclose(contrast, (linear.weight[1] - linear.weight[3]).detach().expand_as(x), atol=1e-12)
