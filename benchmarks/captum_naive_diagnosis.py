"""Why Captum's NaiveInfluenceFunction cannot check ``strategy="exact"`` (the diagnosis in docs/influence.md).

The setting of ``bench_influence.py --quick`` (its ``prepare`` and ``make_calls``): the small CNN trained on 300
bundled digits, Captum's NaiveInfluenceFunction on conv1 only with every eigenvector and ``hessian_reg`` = N x
1e-3. Its Hessian H (of the summed loss) and eigenpairs are recorded as Captum computes them (``_top_eigen``,
which calls ``torch.linalg.eig``, the solver for general matrices). Printed: the largest off-diagonal entry of
VᵀV (0 for orthonormal eigenvectors), the largest entry of Captum's inverse R Rᵀ times H + reg I (the identity
if it inverted), and the same two numbers from ``torch.linalg.eigh`` (the symmetric solver) on the same matrix.

    python benchmarks/captum_naive_diagnosis.py      # about a minute
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from bench_influence import make_calls, prepare
from captum.influence._core import influence_function

DAMPING, LAYER, TRAIN, QUERIES = 1e-3, "conv1", 300, 20


def diagnose(hessian: torch.Tensor, reg: float, values: torch.Tensor, vectors: torch.Tensor) -> str:
    """Largest off-diagonal |VᵀV| and largest |entry| of R Rᵀ (H + reg I) and of R Rᵀ (H + reg I) - I, for
    eigenpairs (values, vectors) of H + reg I, with R = V diag(values^-1/2) as Captum builds it."""
    gram = vectors.T @ vectors
    off_diagonal = (gram - torch.diag(gram.diagonal())).abs().max()
    r = vectors * values.rsqrt()[None]
    eye = torch.eye(len(hessian), dtype=hessian.dtype)
    product = r @ r.T @ (hessian + reg * eye)
    return (f"largest off-diagonal of VᵀV {off_diagonal:.3g}, largest entry of R Rᵀ (H + reg I) "
            f"{product.abs().max():.3g} (of it minus I: {(product - eye).abs().max():.3g})")


def main() -> None:
    torch.set_num_threads(2)                      # as bench_influence.py
    recorded = {}
    top_eigen = influence_function._top_eigen

    def recording(hessian, k, reg, tol):
        values, vectors = top_eigen(hessian, k, reg, tol)
        recorded.update(hessian=hessian, reg=reg, values=values, vectors=vectors)
        return values, vectors

    influence_function._top_eigen = recording
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as out:
        prepare(Path(folder), TRAIN, QUERIES)
        case = {"name": "captum-naive", "exact_layer": LAYER, "exact_damping": DAMPING, "captum_batch": 256}
        fit, _ = make_calls(case, Path(folder), out)
        fit()
    influence_function._top_eigen = top_eigen
    hessian, reg = recorded["hessian"], recorded["reg"]
    damped = torch.linalg.eigvalsh(hessian + reg * torch.eye(len(hessian), dtype=hessian.dtype))
    close = int((damped < 1.01 * reg).sum())
    print(f"{LAYER}: {len(hessian)} weights, {hessian.dtype}, largest eigenvalue of H "
          f"{float(torch.linalg.eigvalsh(hessian).max()):.2g}, hessian_reg {reg:g}; {close} of the {len(hessian)} "
          f"damped eigenvalues within 1% of it (the cluster)")
    print(f"Captum (torch.linalg.eig): {diagnose(hessian, reg, recorded['values'], recorded['vectors'])}")
    values, vectors = torch.linalg.eigh(hessian + reg * torch.eye(len(hessian), dtype=hessian.dtype))
    print(f"torch.linalg.eigh on the same matrix: {diagnose(hessian, reg, values, vectors)}")


if __name__ == "__main__":
    main()
