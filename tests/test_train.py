"""PGD raises the loss within its ball; robust training raises adversarial accuracy;
the vectorised ensemble equals training each model alone."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from gradaudit import data, models, train


@pytest.fixture(scope="module")
def blocks():
    return data.blockmnist("train", copies=1), data.blockmnist("test", copies=1)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_pgd_raises_the_loss_inside_the_ball(blocks, norm, eps):
    train_set, test_set = blocks
    torch.manual_seed(0)
    net = train.fit(models.mlp((1, 56, 28), 2, hidden=32), train_set, epochs=1, progress=False)
    x, y = test_set.x[:64], test_set.y[:64]
    attack = train.PGD(norm=norm, eps=eps, steps=5)
    adv = attack.perturb(net, x, y, torch.Generator().manual_seed(0))
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all() and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(net(adv), y) > F.cross_entropy(net(x), y) + 0.05


def test_robust_training_raises_adversarial_accuracy(blocks):
    train_set, test_set = blocks
    attack = train.PGD(norm="l2", eps=2.0, steps=4)
    torch.manual_seed(0)
    standard = train.fit(models.mlp((1, 56, 28), 2, hidden=64), train_set, epochs=3, progress=False)
    torch.manual_seed(0)
    robust = train.fit(models.mlp((1, 56, 28), 2, hidden=64), train_set, epochs=3, adversary=attack, progress=False)
    s, r = train.evaluate(standard, test_set, attack), train.evaluate(robust, test_set, attack)
    assert s["clean"] > 0.9 and r["clean"] > 0.9
    assert r["adversarial"] > s["adversarial"] + 0.1


RECIPES = [
    {"epochs": 2, "batch_size": 16},
    {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "schedule": "step", "gamma": 0.5,
     "every": 1, "epochs": 3, "batch_size": 16},
    {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05, "schedule": "cosine", "epochs": 2, "batch_size": 16},
]


@pytest.mark.parametrize("recipe", RECIPES, ids=["adam", "sgd-momentum-step", "adamw-cosine"])
def test_ensemble_equals_sequential_training_on_the_same_seeds(recipe):
    torch.manual_seed(0)
    x = torch.rand(50, 1, 6, 6, dtype=torch.float64)
    y = (x[:, 0, :3].sum((1, 2)) > x[:, 0, 3:].sum((1, 2))).long()
    keep = torch.rand(3, *x.shape) < 0.6
    fill, seeds = 0.25, [3, 7, 11]

    def model_fn():
        return models.small_cnn((1, 6, 6), 2, width=2).double()

    together = train.fit_ensemble(model_fn, x, y, keep, fill, seeds, progress=False, **recipe)
    for m, seed in enumerate(seeds):
        torch.manual_seed(seed)
        alone = train.fit(model_fn(), TensorDataset(torch.where(keep[m], x, fill), y), seed=seed, progress=False,
                          **recipe)
        for (name, a), b in zip(alone.state_dict().items(), together[m].state_dict().values(), strict=False):
            assert torch.allclose(a, b, atol=1e-10), name
    accuracy = train.ensemble_accuracy(together, x, y, keep, fill)
    for m in range(3):
        with torch.no_grad():
            expected = (together[m](torch.where(keep[m], x, fill)).argmax(1) == y).double().mean()
        assert accuracy[m].item() == pytest.approx(expected.item())


def test_adversarial_ensemble_equals_adversarial_training_alone():
    """Without a random start, PGD is deterministic; each model of the ensemble is attacked on its own batch."""
    torch.manual_seed(0)
    x = torch.rand(40, 1, 6, 6, dtype=torch.float64)
    y = (x[:, 0, :3].sum((1, 2)) > x[:, 0, 3:].sum((1, 2))).long()
    attack = train.PGD(norm="linf", eps=0.1, steps=3, random_start=False)
    seeds = [1, 2]

    def model_fn():
        return models.mlp((1, 6, 6), 2, hidden=8).double()

    together = train.fit_ensemble(model_fn, x, y, None, 0.0, seeds, adversary=attack, epochs=2, batch_size=8,
                                  optimizer="sgd", lr=0.1, progress=False)
    for m, seed in enumerate(seeds):
        torch.manual_seed(seed)
        alone = train.fit(model_fn(), TensorDataset(x, y), seed=seed, adversary=attack, epochs=2, batch_size=8,
                          optimizer="sgd", lr=0.1, progress=False)
        for a, b in zip(alone.state_dict().values(), together[m].state_dict().values(), strict=False):
            assert torch.allclose(a, b, atol=1e-10)


def test_recipe_schedules_and_errors():
    step = train.Recipe(optimizer="sgd", lr=0.1, schedule="step", gamma=0.75, every=50, floor=0.01, epochs=2000)
    assert step.lr_at(0) == 0.1 and step.lr_at(49) == 0.1 and step.lr_at(50) == pytest.approx(0.075)
    assert step.lr_at(1999) == pytest.approx(0.001)           # 0.75^39 < 0.01: the floor holds
    cosine = train.Recipe(lr=1.0, schedule="cosine", epochs=4)
    assert [cosine.lr_at(e) for e in range(4)] == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466])
    assert train.Recipe.of(step, lr=0.2).lr == 0.2 and train.Recipe.of(step, lr=0.2).gamma == 0.75
    with pytest.raises(TypeError, match="unknown training setting 'learning_rate'"):
        train.Recipe.of(learning_rate=0.1)
    with pytest.raises(ValueError, match="optimizer must be one of 'sgd', 'adam', 'adamw'"):
        train.Recipe(optimizer="rmsprop")
    with pytest.raises(ValueError, match="schedule must be None, 'step' or 'cosine'"):
        train.Recipe(schedule="linear")
    assert "sgd lr 0.1" in step.describe() and "x0.75 every 50 epochs" in step.describe()
