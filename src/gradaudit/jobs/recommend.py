"""``gradaudit recommend``: which local-approximation method fits the model on which neighbourhood."""

from __future__ import annotations

from .. import data as datasets
from ..audit import Interval, local_faithfulness, recommendation
from ..loading import load_model, load_tensor_file
from .presets import RecommendSettings
from .registry import linear_methods


def recommend(settings: RecommendSettings):
    """Han et al.'s (2022) local-faithfulness audit of the eight linear methods on the inputs of ``settings.data``
    (a tensor file, a ``data.load`` spec's test split, or BlockMNIST's test images); returns its result."""
    model = load_model(settings.model, settings.weights, settings.trust_pickle)
    source = settings.data
    if source and source.partition(":")[0] in datasets.SCHEMES:
        inputs = datasets.load(source, "test", size=settings.size, trust_pickle=settings.trust_pickle).x
    else:
        inputs = load_tensor_file(source, settings.trust_pickle) if source else datasets.blockmnist("test").x
    return local_faithfulness(linear_methods(), model, inputs, neighbourhoods=list(settings.neighbourhoods),
                              samples=settings.samples, limit=settings.examples)


def print_ranking(result, neighbourhoods: list[str]) -> None:
    """Each neighbourhood's methods, best first, by unexplained variance of their local linear model with
    its 95% interval over the examples; a method is recommended only where its paired difference from
    the runner-up excludes zero, otherwise the tied set is named."""
    rows = {(r["neighbourhood"], r["method"]): r for r in result.rows}
    for hood in neighbourhoods:
        verdict = recommendation(result.rows, hood)
        print(f"\nneighbourhood {hood}: unexplained variance of each method's local linear model (lower is better; "
              f"95% interval over {rows[hood, verdict.ranking[0]]['examples']} examples)")
        for rank, method in enumerate(verdict.ranking, start=1):
            row = rows[hood, method]
            interval = Interval(row["unexplained"], row["unexplained_low"], row["unexplained_high"],
                                row["unexplained_n"])
            mark = "   <- recommended" if method == verdict.recommended else (
                "   <- tied for best" if verdict.recommended is None and method in verdict.tied else "")
            print(f"  {rank}. {method:22} {interval.text(4)}{mark}")
        if verdict.recommended:
            print(f"  {verdict.recommended} fits best: the runner-up's paired excess is {verdict.margin.text(4)}")
        else:
            print(f"  no single method is recommended: {', '.join(verdict.tied)} are not distinguishable from the "
                  f"best (runner-up's paired excess {verdict.margin.text(4)}); more --examples may separate them")
