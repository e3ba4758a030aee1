"""``TextExplainer``: gradaudit's methods on the input embeddings of a Hugging Face causal LM,
classifier or embedder, one score per prompt token (which methods, and how: ``on_tokens``)."""

from __future__ import annotations

import dataclasses
import html
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..engine import as_target, auto_rows, predict, prepared
from ..engine.checks import check_batch_size, check_choice
from ..engine.target import Contrast as ClassContrast
from ..methods import DeepLift, IntegratedGradients
from ..methods.base import Method
from .layout import Branch, Embedded, build_layout
from .on_tokens import TOKEN_PERTURBATIONS, checked, own_references, per_token
from .render import token_html, token_rich
from .targets import ClassScore, ContinuationScore, Contrast, OutputFunction, mean_pooled

REDUCTIONS = ("sum", "norm")
TOKEN_BASELINES = {"pad": "pad_token_id", "mask": "mask_token_id", "unk": "unk_token_id"}


@dataclass
class TokenScores:
    """Attribution of one target to the tokens of one prompt.

    tokens: list[str]; scores: Tensor[T] (one per prompt token); score / baseline_score: the
    target's score at the input and at the baseline; delta: sum(scores) - (score - baseline_score),
    the completeness gap (near 0 for Integrated Gradients with ``reduce="sum"``).
    """

    tokens: list[str]
    scores: Tensor
    score: float
    baseline_score: float
    delta: float
    ids: list[int]

    def html(self) -> str:
        """The tokens as HTML spans coloured by score (red: for the target, blue: against)."""
        return token_html(self.tokens, self.scores)

    def show(self) -> None:
        """Print the coloured tokens to the terminal (rich)."""
        token_rich(self.tokens, self.scores)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` tokens with the largest scores, as (token, score)."""
        order = self.scores.argsort(descending=True)[:k]
        return [(self.tokens[i], float(self.scores[i])) for i in order]


@dataclass
class GenerationScores:
    """Attributions of each generated token to the prompt tokens: ``matrix`` [G, T]."""

    prompt_tokens: list[str]
    generated_tokens: list[str]
    matrix: Tensor
    log_probs: Tensor                     # [G]: log p of each generated token given what precedes it

    def html(self) -> str:
        """One row of coloured prompt tokens per generated token."""
        rows = [f"<tr><th>{html.escape(tok)}</th><td>{token_html(self.prompt_tokens, row)}</td></tr>"
                for tok, row in zip(self.generated_tokens, self.matrix, strict=False)]
        return "<table class='gradaudit-generation'>" + "".join(rows) + "</table>"

    def show(self) -> None:
        for tok, row in zip(self.generated_tokens, self.matrix, strict=False):
            print(f"{tok!r:>14} <- ", end="")
            token_rich(self.prompt_tokens, row)


class TextExplainer:
    """Token attributions for a Hugging Face model and its tokenizer.

    Args:
        model: a causal LM (``...ForCausalLM``: continuation targets), a classifier
            (``...ForSequenceClassification``: class targets) or an embedder (``AutoModel``:
            callable targets). Its input embedding layer (``get_input_embeddings()``) is where
            attributions are taken: methods perturb and differentiate the embedding output.
        tokenizer: the model's tokenizer.
        add_special_tokens: let the tokenizer add its special tokens to prompts ([CLS]/[SEP], BOS).
        reduce: how a token's [D] embedding attribution becomes one score: "sum" (signed; keeps
            completeness) or "norm" (L2 norm, unsigned). Occlusion, LIME and KernelSHAP give one
            value per token already: "sum" keeps it, "norm" takes its absolute value.
        batch_size: rows per pass (None: automatic, as for every method).
    """

    def __init__(self, model: nn.Module, tokenizer, *, add_special_tokens: bool = True, reduce: str = "sum",
                 batch_size: int | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a Hugging Face model), got {type(model).__name__}")
        getter = getattr(model, "get_input_embeddings", None)
        embed = getter() if callable(getter) else None
        if not isinstance(embed, nn.Module):
            raise TypeError(
                f"{type(model).__name__} has no input embeddings (get_input_embeddings() returned "
                f"{type(embed).__name__}); TextExplainer attributes to the input embedding layer of a "
                "Hugging Face model"
            )
        if not callable(tokenizer):
            raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
        check_choice("reduce", reduce, REDUCTIONS)
        check_batch_size(batch_size)
        self.model, self.tokenizer, self.embed = model, tokenizer, embed
        self.add_special_tokens, self.reduce, self.batch_size = add_special_tokens, reduce, batch_size

    # ---- tokens ---------------------------------------------------------------------------
    def encode(self, prompt: str) -> list[int]:
        """Token ids of ``prompt``; a clear error for an empty prompt."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        ids = list(self.tokenizer(prompt, add_special_tokens=self.add_special_tokens)["input_ids"])
        if not prompt.strip() or not ids:
            raise ValueError(f"prompt {prompt!r} is empty; give at least one token of text to attribute to")
        return ids

    def continuation(self, text: str) -> tuple[int, ...]:
        """Token ids of a target continuation (no special tokens); a clear error if there are none."""
        if not isinstance(text, str):
            raise TypeError(f"a continuation target must be a string, got {type(text).__name__}")
        ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if not ids:
            raise ValueError(f"target {text!r} tokenises to no tokens; give a non-empty continuation")
        return ids

    def embedding(self, text: str) -> Tensor:
        """The sentence embedding [D] of ``text`` (``mean_pooled`` over its tokens, special tokens as the
        prompts'), without gradients: the reference of ``SimilarTo``."""
        ids = torch.tensor([self.encode(text)], device=self.device)
        with prepared(self.model), torch.no_grad():
            output = self.model(input_ids=ids, attention_mask=torch.ones_like(ids))
        if not isinstance(getattr(output, "last_hidden_state", None), Tensor):
            raise ValueError(f"{type(self.model).__name__} gives no last_hidden_state: an embedding target needs an "
                             "embedder (a Hugging Face AutoModel such as all-MiniLM-L6-v2)")
        output.attention_mask = torch.ones_like(ids)
        return mean_pooled(output)[0]

    def tokens(self, ids) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens(list(ids)))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pad_id(self) -> int:
        for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
            value = getattr(self.tokenizer, name, None)
            if value is not None:
                return int(value)
        return 0

    # ---- targets ---------------------------------------------------------------------------
    def _per_prompt(self, value, n: int, name: str) -> list:
        if isinstance(value, (list, tuple)):
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} prompts; give one per prompt or one for all")
            return list(value)
        return [value] * n

    def _resolve(self, prompts: list[list[int]], target):
        """Branches per example and the Target scoring them."""
        n = len(prompts)
        if target is None:
            target = self._predicted(prompts)
        if isinstance(target, _NextTokens):
            return [[Branch((token,))] for token in target], ContinuationScore()
        if isinstance(target, Contrast):
            a, b = target.preferred, target.dispreferred
            if isinstance(a, numbers.Integral) and isinstance(b, numbers.Integral):
                return [[Branch()]] * n, ClassScore(ClassContrast(int(a), int(b)))
            pairs = zip(self._per_prompt(a, n, "Contrast preferred"), self._per_prompt(b, n, "Contrast dispreferred"),
                        strict=False)
            return ([[Branch(self.continuation(x)), Branch(self.continuation(y), sign=-1.0)] for x, y in pairs],
                    ContinuationScore())
        if isinstance(target, str) or (isinstance(target, (list, tuple)) and target and isinstance(target[0], str)):
            return [[Branch(self.continuation(t))] for t in self._per_prompt(target, n, "target")], ContinuationScore()
        if callable(target) and not isinstance(target, Tensor):
            return [[Branch()]] * n, OutputFunction(target)
        return [[Branch()]] * n, ClassScore(as_target(target, n))

    def _predicted(self, prompts: list[list[int]]):
        """target=None: the greedy next token of a causal LM, or the predicted class of a classifier."""
        emb, x, _ = self.inputs(prompts, [[Branch()]] * len(prompts))
        with prepared(self.model), torch.no_grad():
            logits = getattr(emb(x, torch.arange(len(x))).output, "logits", None)
        if isinstance(logits, Tensor) and logits.ndim == 3:
            last = torch.tensor([len(p) - 1 for p in prompts])
            ids = logits[torch.arange(len(prompts)), last].argmax(-1)
            return _NextTokens(ids.tolist())
        if isinstance(logits, Tensor) and logits.ndim == 2:
            return logits.argmax(-1)
        raise ValueError("target=None needs a causal LM or a classifier; for an embedder give a callable target, e.g. "
                         "text.SimilarTo(explainer.embedding(text)) (on the command line: --similar-to TEXT)")

    # ---- running ---------------------------------------------------------------------------
    def inputs(self, prompts: list[list[int]], branches):
        """What methods run on: the row-conditioned model for ``prompts`` (token ids per example)
        with their ``branches`` (list of ``Branch`` per example), the prompt embeddings [B, P, D]
        and the right-padded prompt ids [B, P]."""
        layout = build_layout(prompts, branches, self.pad_id)
        ids = torch.full((len(prompts), layout.width), self.pad_id, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, :len(p)] = torch.tensor(p)
        with torch.no_grad():
            x = self.embed(ids.to(self.device)).detach()
        return Embedded(self.model, layout, self.embed), x, ids

    def _prepare(self, prompts, target):
        single = isinstance(prompts, str)
        texts = [prompts] if single else list(prompts)
        if not texts:
            raise ValueError("prompts is empty; give a string or a non-empty list of strings")
        ids = [self.encode(t) for t in texts]
        branches, scorer = self._resolve(ids, target)
        return single, ids, branches, scorer

    def score(self, prompts, target=None) -> Tensor:
        """The target's score [B] for each prompt (no attribution): log p(continuation), a
        contrast, a class logit or the callable's value."""
        _, ids, branches, scorer = self._prepare(prompts, target)
        emb, x, _ = self.inputs(ids, branches)
        return self._scores(emb, x, scorer)

    def _scores(self, emb: Embedded, x: Tensor, scorer) -> Tensor:
        """Scores [B] of ``scorer`` at embeddings ``x`` [B, P, D], without gradients."""
        with prepared(self.model):
            return predict(emb, x, scorer, self.batch_size or auto_rows(emb, x))

    def _references(self, method: Method, baseline, x: Tensor, ids: Tensor) -> tuple[Method, Tensor]:
        """The method with ``baseline`` set (when given), and the references [M, B, P, D] whose mean
        score is the baseline score (``on_tokens.own_references`` when ``baseline`` is None)."""
        if baseline is None:
            return method, own_references(method, x)
        if not isinstance(method, (IntegratedGradients, DeepLift)):
            raise ValueError(f"baseline is given but {type(method).__name__} takes no baseline embeddings; use "
                             "IntegratedGradients or DeepLift, or leave baseline=None (DeepLiftShap and GradientShap "
                             "take their own baselines [M, tokens, embedding]; Occlusion, LIME and KernelSHAP their "
                             "own constant for a removed token)")
        if isinstance(baseline, str):
            check_choice("baseline", baseline, ("zeros", *TOKEN_BASELINES))
            if baseline == "zeros":
                base = torch.zeros_like(x)
            else:
                token = getattr(self.tokenizer, TOKEN_BASELINES[baseline], None)
                if token is None:
                    raise ValueError(f"baseline={baseline!r} but the tokenizer has no {baseline} token")
                with torch.no_grad():
                    base = self.embed(torch.full_like(ids, int(token)).to(x.device)).to(x.dtype)
                special = torch.isin(ids, torch.tensor(list(getattr(self.tokenizer, "all_special_ids", [])),
                                                       dtype=torch.long)).to(x.device)
                base = torch.where(special[..., None], x, base)      # [CLS], [SEP], BOS stay as they are
        else:
            base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
            if base.ndim == 2:
                base = base[: x.shape[1]]
            try:
                base = torch.broadcast_to(base, x.shape).clone()
            except RuntimeError:
                raise ValueError(f"baseline has shape {list(base.shape)}; expected embeddings broadcastable to "
                                 f"{list(x.shape)} ([prompts, tokens, embedding])") from None
        return dataclasses.replace(method, baseline=base), base[None]

    def _attribute(self, method: Method, emb: Embedded, x: Tensor, lengths: list[int], scorer) -> Tensor:
        """Token scores [B, P] of ``method`` for ``scorer`` at the prompt embeddings ``x`` [B, P, D]
        (prompts of ``lengths`` tokens): the [D] attribution of each token reduced, or for Occlusion,
        LIME and KernelSHAP (run on whole tokens, ``on_tokens``) the token's own value ("norm": its
        absolute value)."""
        if isinstance(method, TOKEN_PERTURBATIONS):
            values = per_token(method, emb, x, lengths, scorer, self.batch_size)
            return values if self.reduce == "sum" else values.abs()
        attr = method(emb, x, scorer, batch_size=self.batch_size)
        return attr.sum(-1) if self.reduce == "sum" else attr.norm(dim=-1)

    def explain(self, prompts, target=None, method: Method | None = None, *, baseline=None):
        """Attribute ``target`` to the tokens of ``prompts`` (a string, or a list: padded batch).

        target: a continuation string (log p, teacher-forced, multi-token), ``text.Contrast(a, b)``,
            a class index (classifiers), a callable ``output -> Tensor[batch]`` (``output.attention_mask``
            is set), a list with one per prompt, or None (greedy next token / predicted class).
        method: a gradaudit method (default ``IntegratedGradients(steps=32)``): the gradient and path
            methods, CLIME and Random on the embeddings; Occlusion, LIME and KernelSHAP on whole
            tokens; layer methods and MetaStep are refused with a ValueError (``text.on_tokens``).
        baseline: for IntegratedGradients and DeepLift: "zeros", "pad", "mask", "unk" (special tokens
            kept) or an embedding tensor ([T, D] or [B, T, D]); None keeps the method's own (zeros).
        Returns ``TokenScores`` for a string, a list of them for a list. ``baseline_score`` is the mean
        score over the method's references (``on_tokens.own_references``).
        """
        method = checked(method)
        single, ids, branches, scorer = self._prepare(prompts, target)
        emb, x, padded = self.inputs(ids, branches)
        method, refs = self._references(method, baseline, x, padded)
        attr = self._attribute(method, emb, x, [len(p) for p in ids], scorer)
        scores_at = self._scores(emb, x, scorer)
        scores_base = torch.stack([self._scores(emb, ref, scorer) for ref in refs]).mean(0)
        out = []
        for i, p in enumerate(ids):
            s = attr[i, :len(p)].detach().cpu()
            gap = float(s.sum()) - float(scores_at[i] - scores_base[i])
            out.append(TokenScores(self.tokens(p), s, float(scores_at[i]), float(scores_base[i]), gap, p))
        return out[0] if single else out

    def generate(self, prompt: str, max_new_tokens: int) -> list[int]:
        """Greedy continuation ids of ``prompt`` (the model's ``generate``, no sampling)."""
        if not callable(getattr(self.model, "generate", None)):
            raise TypeError(f"{type(self.model).__name__} cannot generate; explain_generation needs a causal LM")
        ids = torch.tensor([self.encode(prompt)], device=self.device)
        with prepared(self.model), torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=max_new_tokens, pad_token_id=self.pad_id)
        return out[0, ids.shape[1]:].tolist()

    def explain_generation(self, prompt: str, max_new_tokens: int = 12, method: Method | None = None,
                           *, baseline=None) -> GenerationScores:
        """Generate greedily, then attribute each generated token's log-probability (given the
        prompt and the tokens before it, teacher-forced) to the prompt tokens: a [G, T] matrix."""
        method = checked(method)
        generated = self.generate(prompt, max_new_tokens)
        if not generated:
            raise ValueError("the model generated no tokens")
        ids = self.encode(prompt)
        branches = [[Branch(tuple(generated[:i + 1]), first=i)] for i in range(len(generated))]
        emb, x, padded = self.inputs([ids] * len(generated), branches)
        method, _ = self._references(method, baseline, x, padded)
        attr = self._attribute(method, emb, x, [len(ids)] * len(generated), ContinuationScore())
        logp = self._scores(emb, x, ContinuationScore())
        return GenerationScores(self.tokens(ids), self.tokens(generated), attr.detach().cpu(), logp.detach().cpu())


class _NextTokens(list):
    """Continuations given as token ids (target=None on a causal LM: the greedy next token)."""
