"""The linear datamodeling score (Park et al. 2023) of the table in docs/influence.md: multinomial logistic regression
(Flatten + Linear) on scikit-learn's 8x8 digits, N = 200 training examples, 16 queries, 20 half-subsets, each
retrained with Adam (lr 0.05, 30 epochs, batch 64); damping 0.01 for exact and ekfac, the random and identity
controls beside them; then each strategy against the controls, paired over queries.
Run: python examples/influence_lds.py (about 30 s on 2 cores)."""

import torch
from sklearn.datasets import load_digits
from torch import nn

from gradaudit import audit, train
from gradaudit.audit.influence_checks import verdicts

RECIPE = {"optimizer": "adam", "lr": 0.05, "epochs": 30, "batch_size": 64}


def logistic() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


digits = load_digits()
x = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
y = torch.tensor(digits.target)
train_set, queries = (x[:200], y[:200]), (x[1000:1016], y[1000:1016])
torch.manual_seed(0)
model = train.fit(logistic(), train_set, seed=0, progress=False, **RECIPE)
result = audit.lds(model, train_set, queries, ("exact", "ekfac"), model_fn=logistic, subsets_count=20, damping=0.01,
                   progress=False, **RECIPE)
for row in result.rows:
    print(f"{row['method']:9} LDS {row['lds']:+.2f} [{row['lds_low']:+.2f}, {row['lds_high']:+.2f}] "
          f"over {row['queries']} queries")
print("\n".join(verdicts({"lds": result.rows})))
