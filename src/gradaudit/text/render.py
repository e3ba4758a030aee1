"""Tokens coloured by score: HTML spans for reports, rich text for the terminal."""

from __future__ import annotations

import html

from torch import Tensor


def displays(tokens: list[str]) -> list[str]:
    """Tokenizer pieces as readable text: GPT-2 'Ġ' and SentencePiece '▁' become spaces; for
    WordPiece, '##' continuations join the previous piece and other pieces start with a space."""
    if any(t.startswith(("Ġ", "▁")) for t in tokens):
        return [t.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\\n") for t in tokens]
    return [t[2:] if t.startswith("##") else (" " + t if i else t) for i, t in enumerate(tokens)]


def _shares(scores: Tensor) -> list[float]:
    """Scores scaled to [-1, 1] by the largest magnitude (all zeros stay zeros)."""
    top = float(scores.abs().max()) if scores.numel() else 0.0
    return [float(s) / top if top > 0 else 0.0 for s in scores]


def token_html(tokens: list[str], scores: Tensor) -> str:
    """Escaped ``<span>`` per token, red for positive scores and blue for negative, with the
    score in the title."""
    spans = []
    for token, share, score in zip(displays(tokens), _shares(scores), scores.tolist(), strict=False):
        colour = f"rgba(214,39,40,{share:.3f})" if share >= 0 else f"rgba(31,119,180,{-share:.3f})"
        spans.append(f"<span title='{score:+.4g}' style='background:{colour};padding:1px 2px;"
                     f"border-radius:3px'>{html.escape(token)}</span>")
    return "<span class='gradaudit-tokens'>" + "".join(spans) + "</span>"


def token_rich(tokens: list[str], scores: Tensor) -> None:
    """Print the tokens with background colours to the terminal."""
    from rich.console import Console
    from rich.text import Text

    line = Text()
    for token, share in zip(displays(tokens), _shares(scores), strict=False):
        level = int(round(abs(share) * 4))
        style = f"on {'red' if share >= 0 else 'blue'}{'1' if level >= 3 else '3'}" if level else ""
        line.append(token, style=style)
    Console().print(line)
