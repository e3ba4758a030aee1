"""``gradaudit explain-text``: a language model's output attributed to its prompt's tokens."""

from __future__ import annotations

from html import escape
from pathlib import Path

from .. import text
from ..errors import UsageError
from .presets import ExplainTextSettings
from .registry import text_method


def explain_text(settings: ExplainTextSettings):
    """Explain ``settings.target`` (a continuation, or a class index of a classifier; None: the model's own choice),
    optionally against ``contrast``, or for an embedder its cosine similarity to ``similar_to``'s embedding;
    prints the coloured tokens and the top five; returns the scores."""
    prompt, target, contrast, method, steps = (settings.prompt, settings.target, settings.contrast, settings.method,
                                               settings.steps)
    similar_to, html = settings.similar_to, settings.html
    try:
        model, tokenizer = text.load(settings.model, settings.kind)
    except ImportError as err:
        raise UsageError(str(err)) from err
    tx = text.TextExplainer(model, tokenizer, add_special_tokens=settings.special_tokens, reduce=settings.reduce)
    classifier = "SequenceClassification" in type(model).__name__

    def parse(value):                     # class indices for classifiers, continuation text otherwise
        return int(value) if classifier and value is not None and value.lstrip("-").isdigit() else value

    wanted = parse(target)
    if similar_to is not None:
        wanted = text.SimilarTo(tx.embedding(similar_to))
        target = f"cosine similarity to {similar_to!r}"
    if contrast is not None:
        wanted = text.Contrast(wanted, parse(contrast))
    if method == "reagent":
        if not isinstance(wanted, str):
            raise ValueError("--method reagent needs --target: a continuation of a causal LM (no --contrast)")
        result = text.reagent(tx, prompt, wanted, max_steps=steps)
        result.show()
        print(f"p(target) {result.score:.4g}; ReAGent importances sum to 1")
    else:
        baseline = settings.baseline if method == "ig" else None
        result = tx.explain(prompt, wanted, text_method(method, steps), baseline=baseline)
        result.show()
        print(f"score {result.score:+.4f}   baseline {result.baseline_score:+.4f}   "
              f"completeness gap {result.delta:+.2e}")
    for token, score in result.top(5):
        print(f"  {token!r:>16} {score:+.4f}")
    if html:
        page = (f"<!doctype html><meta charset='utf-8'><title>gradaudit explain-text</title>"
                f"<p>prompt: {escape(prompt)}<br>target: {escape(str(target))}"
                f"{' vs ' + escape(contrast) if contrast else ''}<br>method: {escape(method)}</p>"
                f"<p style='font-size:1.4em'>{result.html()}</p>")
        Path(html).write_text(page, encoding="utf-8")
        print(f"html: {Path(html).resolve()}")
    return result
