"""``gradaudit influence-text``: which training sequences make a language model complete a prompt as it does.

The local causal LM (``--model`` folder) and the training corpus (``--train``: a .txt file, one sequence per
non-empty line, or .jsonl, one ``{"text": ...}`` object or string per line) give ``text.influence`` with
token terms. The fitted factors are saved to ``OUT/factors`` and read back on a rerun; the top sequences
(index, score, tokens and their terms) go to ``OUT/results.sqlite`` as they are found, and
``OUT/influence.html`` shows them, every string escaped. A rerun resumes; one whose settings (or corpus
contents) differ is refused before anything is written.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from html import escape
from pathlib import Path

import torch

from .. import influence, text
from ..errors import UsageError
from ..influence.sequences import TokenLoss
from ..store import Store
from ..text.influence import influence as text_influence
from ..text.influence import resolve_layers
from ..text.render import token_html
from .presets import TextInfluenceSettings
from .runfolder import check_run_folder

PAGE = "influence.html"


def read_corpus(path: str | Path) -> list[str]:
    """The training sequences of a .txt (one per non-empty line) or .jsonl file (a string or {"text": ...} a line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--train {str(path)!r}: no such file (a .txt or .jsonl corpus)")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(lines, 1):
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise UsageError(f"--train {path}: line {number} is not JSON ({err.msg})") from None
            value = value.get("text") if isinstance(value, dict) else value
            if not isinstance(value, str):
                raise UsageError(f"--train {path}: line {number} holds no text (a string or {{\"text\": ...}})")
            texts.append(value)
    elif path.suffix == ".txt":
        texts = lines
    else:
        raise UsageError(f"--train must be a .txt or .jsonl file; got {path.name!r}")
    if not texts:
        raise UsageError(f"--train {path} holds no sequences")
    return texts


def run(settings: TextInfluenceSettings, out: str | Path) -> dict:
    """Fit (or read) the factors, score, store the top sequences and write the page; returns
    {"rows", "page", "seconds"}."""
    out = Path(out)
    start = time.perf_counter()
    texts = read_corpus(settings.train)
    try:
        model, tokenizer = text.load(settings.model, "causal")
    except ImportError as err:
        raise UsageError(str(err)) from err
    try:
        resolve_layers(model, settings.layers)
    except ValueError as err:
        raise UsageError(f"--layers: {err}") from None
    check_run_folder(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / "results.sqlite")
    try:
        store.put("settings", {"run": str(len(store.rows("settings")))},
                  {"settings": asdict(settings), "preset": type(settings).__name__})
        rows = store.rows("influence_text")
        if len(rows) < min(settings.top, len(texts)):
            rows = _score(settings, model, tokenizer, texts, out, store)
        else:
            print(f"influence-text: {len(rows)} sequences read from {out / 'results.sqlite'}", flush=True)
    finally:
        store.close()
    page = write_page(out, settings, rows)
    return {"rows": rows, "page": str(page.resolve()), "seconds": time.perf_counter() - start}


def _score(settings: TextInfluenceSettings, model, tokenizer, texts: list[str], out: Path, store: Store) -> list[dict]:
    folder = out / "factors"
    factors = None
    if (folder / "settings.json").is_file():
        factors = influence.load(folder, model, loss=TokenLoss())
        print(f"influence-text: factors read from {folder}", flush=True)
    result = text_influence(model, tokenizer, texts, settings.prompt, settings.completion, strategy=settings.strategy,
                            layers=settings.layers, by="token", rank=settings.rank, factors=factors,
                            prefilter=settings.prefilter, add_special_tokens=settings.special_tokens,
                            seed=settings.seed)
    if factors is None:
        result.fit.save(folder)
    rows = []
    for rank, (index, score) in enumerate(result.top(settings.top)):
        row = {"rank": rank, "index": index, "score": score, "text": texts[index], "tokens": result.tokens[index],
               "terms": result.token_scores[index].tolist()}
        store.put("influence_text", {"rank": rank}, row)
        rows.append(row)
    return rows


def write_page(out: Path, settings: TextInfluenceSettings, rows: list[dict]) -> Path:
    """``OUT/influence.html``: the query and its top sequences, tokens coloured by their terms (escaped)."""
    prefilter = (f", BM25 prefilter: top {settings.prefilter} (biased towards sequences sharing the query's words)"
                 if settings.prefilter else "")
    body = "".join(f"<tr><td>{row['rank'] + 1}</td><td>{row['index']}</td><td>{row['score']:+.4g}</td>"
                   f"<td>{token_html(row['tokens'], torch.tensor(row['terms']))}</td></tr>" for row in rows)
    page = ("<!doctype html><meta charset='utf-8'><title>gradaudit influence-text</title>"
            f"<h1>Training sequences behind a completion</h1><p>prompt: {escape(settings.prompt)}<br>"
            f"completion: {escape(settings.completion)}<br>strategy: {escape(settings.strategy)}, layers: "
            f"{escape(settings.layers)}, query rank: {escape(str(settings.rank))}"
            f"{escape(prefilter)}"
            "</p><p>score: influence on log p(completion | prompt), positive = the sequence makes it more likely "
            "(Grosse et al. 2023, not divided by the number of sequences). Token colours: each token's term "
            "(red for, blue against); the terms sum to the score and are not the tokens' own influence.</p>"
            f"<table><tr><th>#</th><th>sequence</th><th>score</th><th>tokens</th></tr>{body}</table>")
    path = out / PAGE
    path.write_text(page, encoding="utf-8")
    return path


def print_summary(found: dict) -> None:
    """``run``'s top sequences and its page, as ``gradaudit influence-text`` prints them."""
    for row in found["rows"]:
        print(f"  {row['rank'] + 1:>3}. sequence {row['index']:<6} {row['score']:+.4g}  {row['text'][:70]!r}")
    print(f"finished in {found['seconds']:.0f}s; page: {found['page']}")
