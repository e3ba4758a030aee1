"""The unlearning audit (Jia et al. 2023, as SalUn reports it): how close each unlearning method
comes to retraining from scratch on the retain set.

UA = 1 - accuracy on the forget set; RA = accuracy on the retain set; TA = accuracy on the test
set; MIA-efficacy = share of forget examples a membership-inference classifier judges
non-members. The classifier is the authors' (``evaluation/SVC_MIA.py``, "confidence"): an RBF
SVM (C = 3, gamma "auto") on the softmax confidence of the true class, fit on the first
len(test) retain examples (members) against the test set (non-members). Gap to Retrain = mean of
|UA - UA_retrain|, |RA - ...|, |TA - ...|, |MIA - ...| (in accuracy units) for the same seed.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..data.inputs import Examples, as_examples
from ..keys import fingerprint
from ..store import Store
from .common import call_arguments, memo
from .results import AuditResult
from .stats import mean_interval

METRICS = ("UA", "RA", "TA", "MIA")


@contextmanager
def evaluating(model: nn.Module):
    """``model`` in eval mode without gradients; every module's own mode restored afterwards."""
    was = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, training in was:
            module.training = training


def _predictions(model: nn.Module, data: Examples, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """One eval-mode pass over ``data``: (correct [N] bool, softmax probability of the true class [N],
    0 where the output is not finite: a diverged model claims nothing)."""
    correct, confidence = [], []
    with evaluating(model):
        for s in range(0, len(data), batch_size):
            logits, y = model(data.x[s:s + batch_size]), data.y[s:s + batch_size]
            correct.append(logits.argmax(1) == y)
            confidence.append(logits.softmax(1).gather(1, y[:, None]).flatten())
    return torch.cat(correct), torch.cat(confidence).nan_to_num(0.0, 0.0, 0.0)


def confidences(model: nn.Module, data: Examples) -> Tensor:
    """Softmax probability of the true class [N], in eval mode (0 where the output is not finite)."""
    return _predictions(model, data)[1]


def _fit_membership(members: Tensor, outsiders: Tensor):
    """The authors' classifier (sklearn ``SVC``, C = 3, RBF, gamma "auto") on confidences [N]: 1 = member."""
    from sklearn.svm import SVC

    features = torch.cat([members, outsiders]).double().numpy()[:, None]
    return SVC(C=3, gamma="auto", kernel="rbf").fit(features, [1] * len(members) + [0] * len(outsiders))


def _share(flags: Tensor) -> float:
    """Share of True in ``flags``, as an exact ratio of counts."""
    return int(flags.sum()) / len(flags)


def _non_member_share(classifier, confidence: Tensor) -> float:
    return float(1 - classifier.predict(confidence.double().numpy()[:, None]).mean())


def membership_classifier(model: nn.Module, retain: Examples, test: Examples):
    """The confidence-based membership classifier for ``model``, fit on the first len(test) retain
    examples (members) against ``test``; predicts 1 (member) or 0 from a confidence column [N, 1]."""
    head = Examples(retain.x[:len(test)], retain.y[:len(test)])
    return _fit_membership(confidences(model, head), confidences(model, test))


def mia_efficacy(model: nn.Module, forget, retain, test) -> float:
    """Share of ``forget`` examples the membership classifier judges non-members (higher = forgotten)."""
    forget, retain, test = (as_examples(d, n) for d, n in ((forget, "forget"), (retain, "retain"), (test, "test")))
    return _non_member_share(membership_classifier(model, retain, test), confidences(model, forget))


def scores(model: nn.Module, forget, retain, test) -> dict[str, float]:
    """UA, RA, TA and MIA-efficacy of ``model`` (see the module docstring), one forward pass per set."""
    forget, retain, test = (as_examples(d, n) for d, n in ((forget, "forget"), (retain, "retain"), (test, "test")))
    (forget_ok, forget_conf), (retain_ok, retain_conf), (test_ok, test_conf) = (
        _predictions(model, part) for part in (forget, retain, test))
    classifier = _fit_membership(retain_conf[:len(test)], test_conf)
    return {"UA": 1 - _share(forget_ok), "RA": _share(retain_ok), "TA": _share(test_ok),
            "MIA": _non_member_share(classifier, forget_conf)}


def with_gaps(rows: list[dict], reference: str = "Retrain") -> list[dict]:
    """``rows`` with ``gap``: each row's mean |metric - reference's| over UA, RA, TA, MIA, against the
    reference row of the same scenario and seed (rows without one get no gap)."""
    references = {(r.get("scenario"), r["seed"]): r for r in rows if r["method"] == reference}
    out = []
    for row in rows:
        ref = references.get((row.get("scenario"), row["seed"]))
        gap = None if ref is None else sum(abs(row[m] - ref[m]) for m in METRICS) / len(METRICS)
        out.append({**row, "gap": gap})
    return out


def unlearning(methods, model: nn.Module, forget, retain, test, *, seeds=(0,), scenario: str = "custom",
               model_name: str = "model", store: Store | None = None, progress: bool = True) -> AuditResult:
    """Run every unlearning method on ``model`` for each seed and score it; the original model is
    scored too (method "Original"). Each finished (method, seed) row goes to ``store`` at once.

    methods: unlearners (``unlearn.Retrain(...)``, ``unlearn.SalUn(...)`` ...); include a ``Retrain``
        for the gap. model: the trained model (left as found). forget / retain: the split of its
        training data; test: held-out data. Returns rows with UA, RA, TA, MIA, seconds and gap.
    """
    call = call_arguments(locals(), units=("seeds",))
    forget, retain, test = (as_examples(d, n) for d, n in ((forget, "forget"), (retain, "retain"), (test, "test")))
    for name, part in (("forget", forget), ("retain", retain), ("test", test)):
        if len(part) == 0:
            raise ValueError(f"{name} is empty; the unlearning audit needs examples in forget, retain and test")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"methods must have different names; got {names}")
    rows = []
    for seed in seeds:
        key = {"model": model_name, "scenario": scenario, "seed": seed}
        rows.append(memo(store, "unlearning", {**key, "method": "Original"}, {"call": call},
                         lambda: {**scores(model, forget, retain, test), "seconds": 0.0}))
        for method in methods:
            def compute(method=method, seed=seed):
                start = time.perf_counter()
                new = method(model, forget, retain, seed=seed, progress=progress)
                seconds = time.perf_counter() - start
                finite = all(bool(torch.isfinite(p).all()) for p in new.parameters())
                return {**scores(new, forget, retain, test), "seconds": seconds, "finite": finite}

            if progress:
                print(f"  {scenario} seed {seed}: {method.name}", flush=True)
            rows.append(memo(store, "unlearning", {**key, "method": method.name},
                             {"call": call, "method": fingerprint(method, method.name)}, compute))
    return AuditResult("unlearning", with_gaps(rows))


def gap_table(rows: list[dict]) -> list[dict]:
    """Per (scenario, method): every metric's mean with its 95% interval over seeds."""
    rows = with_gaps(rows)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row.get("scenario"), row["method"]), []).append(row)
    table = []
    for (scenario, method), part in groups.items():
        entry = {"scenario": scenario, "method": method, "seeds": len(part)}
        for column in (*METRICS, "seconds", "gap"):
            values = [r[column] for r in part if r.get(column) is not None]
            if values:
                entry[column] = mean_interval(values)
        table.append(entry)
    return table
