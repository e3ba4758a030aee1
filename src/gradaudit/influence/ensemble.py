"""An ensemble of fitted influence models (one per trained model): every score is the mean of the members'.

``influence.fit([m1, ..., mK], train, strategy=...)`` fits each model as ``fit`` would fit it alone; the
ensemble's ``scores``, ``token_scores`` and ``self_scores`` average the members' (``by="layer"``: layer by
layer, so the layers still sum to the total). TRAK combines its models its own way (``trak.Trak``).
"""

from __future__ import annotations

from pathlib import Path

from . import store
from .fitted import Influence


class Ensemble:
    """Fitted ``Influence`` members of the same architecture; the methods of ``Influence``, averaged."""

    def __init__(self, members: list[Influence]):
        self.members = members

    @property
    def strategy(self) -> str:
        return self.members[0].strategy

    @property
    def layers(self):
        return self.members[0].layers

    @property
    def damping(self) -> dict[str, dict[str, float]]:
        """{"model m": that member's {layer: lambda}}."""
        return {f"model {m}": member.damping for m, member in enumerate(self.members)}

    def _mean(self, method: str, *args, **kwargs):
        found = [getattr(member, method)(*args, **kwargs) for member in self.members]
        if isinstance(found[0], dict):
            return {key: sum(f[key] for f in found) / len(found) for key in found[0]}
        return sum(found) / len(found)

    def scores(self, queries, train, by=None, measurement=None, rank=None):
        """The mean of the members' ``Influence.scores`` (same arguments): Tensor[Q, N], or {layer: Tensor[Q, N]}."""
        return self._mean("scores", queries, train, by=by, measurement=measurement, rank=rank)

    def token_scores(self, queries, train, measurement=None, rank=None):
        """The mean of the members' ``Influence.token_scores``: Tensor[Q, N, P]."""
        return self._mean("token_scores", queries, train, measurement=measurement, rank=rank)

    def self_scores(self, train):
        """The mean of the members' ``Influence.self_scores``: Tensor[N]."""
        return self._mean("self_scores", train)

    def save(self, folder):
        """Each member into ``folder/model_m``, and the ensemble's size into ``folder``; ``influence.load(folder,
        models)`` reads them back."""
        folder = Path(folder)
        for m, member in enumerate(self.members):
            member.save(folder / f"model_{m}")
        return store.write(folder, {"strategy": self.strategy, "ensemble": len(self.members)}, {})
