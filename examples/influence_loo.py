"""Koh & Liang's leave-one-out check of influence scores (the table in docs/influence.md): multinomial logistic
regression on scikit-learn's 8x8 digits, N = 300 training examples, 10 queries, 30 removals, each
strategy against retraining to convergence. Run: python examples/influence_loo.py (about 5 s)."""

import torch
from sklearn.datasets import load_digits

from gradaudit import audit

digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float64) / 16
y = torch.tensor(digits.target)
order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
train, queries = (x[order[:300]], y[order[:300]]), (x[order[300:310]], y[order[300:310]])
result = audit.loo_correlation(train, queries, strategies=("exact", "kfac", "ekfac", "diagonal"), removals=30)
for row in result.rows:
    print(f"{row['method']:9} pearson {row['pearson']:.3f} [{row['pearson_low']:.3f}, {row['pearson_high']:.3f}]  "
          f"slope {row['slope']:.2f} [{row['slope_low']:.2f}, {row['slope_high']:.2f}]")
