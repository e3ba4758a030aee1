"""Token sequences as the engine sees them: prompt embeddings in, fixed continuations appended.

Methods attribute to the prompt's input embeddings ``x`` [B, P, D] (P: the longest prompt).
Each example also has one or two *branches* (the continuation whose log-probability is scored,
teacher-forced after the prompt); ``Embedded`` builds every branch's full sequence from the
(possibly perturbed) prompt embeddings and the fixed continuation embeddings, right-padded,
with its attention mask, and runs the language model on ``inputs_embeds``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..engine import RowConditioned


@dataclass(frozen=True)
class Branch:
    """A continuation scored after a prompt: ``ids`` are appended (teacher forcing) and the
    log-probabilities of ``ids[first:]`` are summed. ``sign`` +1 or -1 (contrasts). Empty
    ``ids`` scores nothing: a classifier or an embedder reads the output directly."""

    ids: tuple[int, ...] = ()
    first: int = 0
    sign: float = 1.0


@dataclass
class Layout:
    """Index tensors for B examples with K branches each (shapes in the field comments)."""

    prompt_lengths: Tensor    # [B]
    source: Tensor            # [B, S, L]: index into cat(prompt positions P, fixed slots F)
    mask: Tensor              # [B, S, L]: attention mask (1 real token, 0 padding)
    fixed_ids: Tensor         # [B, S, F]: token ids of the fixed slots (continuation inputs, then pad)
    positions: Tensor         # [B, K, M]: sequence position whose logits predict each scored token
    scored_ids: Tensor        # [B, K, M]
    scored: Tensor            # [B, K, M]: 1 where a scored token exists
    signs: Tensor             # [K]
    sequence_of: Tensor       # [K]: which of the S built sequences each branch reads its logits from
    width: int                # P

    @property
    def sequences(self) -> int:
        return self.source.shape[1]


def build_layout(prompts: list[list[int]], branches: list[list[Branch]], pad_id: int) -> Layout:
    """Lay out ``prompts`` (token ids per example) with their ``branches`` (same count for all)."""
    k = len(branches[0])
    width = max(len(p) for p in prompts)
    forced = [[list(br.ids[:-1]) for br in brs] for brs in branches]
    slots = max(len(f) for fs in forced for f in fs) + 1          # the last slot holds the pad token
    length = max(len(p) + len(f) for p, fs in zip(prompts, forced, strict=False) for f in fs)
    scored_len = max(1, max(len(br.ids) - br.first for brs in branches for br in brs))
    b = len(prompts)
    source = torch.full((b, k, length), width + slots - 1, dtype=torch.long)
    mask = torch.zeros(b, k, length, dtype=torch.long)
    fixed_ids = torch.full((b, k, slots), pad_id, dtype=torch.long)
    positions = torch.zeros(b, k, scored_len, dtype=torch.long)
    scored_ids = torch.zeros(b, k, scored_len, dtype=torch.long)
    scored = torch.zeros(b, k, scored_len)
    for i, (prompt, brs) in enumerate(zip(prompts, branches, strict=False)):
        p = len(prompt)
        for j, br in enumerate(brs):
            f = forced[i][j]
            source[i, j, :p] = torch.arange(p)
            source[i, j, p:p + len(f)] = width + torch.arange(len(f))
            mask[i, j, :p + len(f)] = 1
            fixed_ids[i, j, :len(f)] = torch.tensor(f, dtype=torch.long)
            n = len(br.ids) - br.first
            positions[i, j, :n] = p - 1 + br.first + torch.arange(n)
            scored_ids[i, j, :n] = torch.tensor(br.ids[br.first:], dtype=torch.long)
            scored[i, j, :n] = 1.0
    signs = torch.tensor([br.sign for br in branches[0]])
    sequence_of = torch.arange(k)
    if k > 1 and all(f == fs[0] for fs in forced for f in fs):
        # Branches that differ only in the token scored share one forward (single-token contrasts).
        source, mask, fixed_ids = source[:, :1], mask[:, :1], fixed_ids[:, :1]
        sequence_of = torch.zeros(k, dtype=torch.long)
    return Layout(torch.tensor([len(p) for p in prompts]), source, mask, fixed_ids, positions, scored_ids,
                  scored, signs, sequence_of, width)


@dataclass
class TextForward:
    """One forward of R rows × S sequences: the model's ``output`` (batch R*S) and the layout."""

    output: object
    rows: Tensor
    layout: Layout


class Embedded(RowConditioned):
    """The language model as a function of the prompt embeddings [R, P, D] of examples ``rows``."""

    def __init__(self, model: nn.Module, layout: Layout, embed: nn.Module):
        super().__init__()
        self.model, self.layout = model, layout
        self.training = model.training            # a new module starts in train mode; mirror the model's
        device = next(model.parameters()).device
        with torch.no_grad():
            self.fixed = embed(layout.fixed_ids.to(device))          # [B, S, F, D]
        self.source = layout.source.to(device)
        self.mask = layout.mask.to(device)

    def forward(self, x: Tensor, rows: Tensor) -> TextForward:
        r, k = len(x), self.layout.sequences
        rows = rows.to(self.source.device)
        prompt = x.unsqueeze(1).expand(r, k, *x.shape[1:])
        src = torch.cat([prompt, self.fixed[rows].to(x.dtype)], dim=2)                 # [R, S, P+F, D]
        index = self.source[rows].unsqueeze(-1).expand(-1, -1, -1, x.shape[-1])
        seq = src.gather(2, index).flatten(0, 1)                                       # [R*S, L, D]
        mask = self.mask[rows].flatten(0, 1)
        output = self.model(inputs_embeds=seq, attention_mask=mask)
        try:
            output.attention_mask = mask
        except (AttributeError, TypeError):
            pass
        return TextForward(output, rows, self.layout)
