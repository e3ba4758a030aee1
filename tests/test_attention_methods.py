"""AttentionRollout, GradientRollout and AttnLRP on tiny random Hugging Face transformers (ViT, DeiT,
BERT, GPT-2): rollouts against a hand computation from the model's own ``output_attentions=True``,
AttnLRP against the ``lxt`` library (run in a subprocess: lxt patches classes globally) and
conservation of CP-LRP on bias-free models; models left as found; a model without attention refused."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
import transformers
from helpers import assert_unchanged, snapshot
from torch import nn

from gradaudit.methods.attention import AttentionRollout, AttnLRP, GradientRollout

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from gradaudit import text  # noqa: E402


class Logits(nn.Module):
    """A Hugging Face model as a function of its input tensor ([B, C, H, W] pixels or [B, T, D] token
    embeddings) returning class logits [B, K] (for a causal LM: the last position's next-token logits)."""

    def __init__(self, model: nn.Module, key: str = "pixel_values", last: bool = False):
        super().__init__()
        self.model, self.key, self.last = model, key, last
        self.training = model.training

    def forward(self, x, **kwargs):
        logits = self.model(**{self.key: x}, **kwargs).logits
        return logits[:, -1] if self.last else logits


def vit(cls="ViT", seed=0):
    torch.manual_seed(seed)
    config = getattr(transformers, f"{cls}Config")(image_size=32, patch_size=8, num_channels=3, hidden_size=32,
                                                   num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                                   num_labels=5)
    model = getattr(transformers, f"{cls}ForImageClassification")(config).double().eval()
    for head in ("classifier", "cls_classifier", "distillation_classifier"):
        if isinstance(getattr(model, head, None), nn.Linear):        # zero-initialised heads: no gradient at all
            nn.init.normal_(getattr(model, head).weight, std=0.5)
    return model


def gpt2(seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=50,
                                     bos_token_id=0, eos_token_id=0, initializer_range=0.2)
    return transformers.GPT2LMHeadModel(config).double().eval()


def llama(seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=0.2)
    return transformers.LlamaForCausalLM(config).double().eval()


def bert(seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=3,
                                     initializer_range=0.2)
    return transformers.BertForSequenceClassification(config).double().eval()


TEXT_MODELS = {"gpt2": gpt2, "bert": bert, "llama": llama}


def eager_reference(model: nn.Module, x, key, last=False, target=1):
    """Attentions [B, heads, T, T] per layer from ``output_attentions=True`` on an eager copy, and the
    gradient of the target logit with respect to each."""
    reference = copy.deepcopy(model)
    reference.set_attn_implementation("eager")
    out = reference(**{key: x}, output_attentions=True)
    logits = out.logits[:, -1] if last else out.logits
    grads = torch.autograd.grad(logits[:, target].sum(), out.attentions)
    return [a.detach() for a in out.attentions], list(grads)


def rollout(attentions):
    joint = None
    for a in attentions:
        step = a.mean(1) + torch.eye(a.shape[-1], dtype=a.dtype)
        step = step / step.sum(-1, keepdim=True)
        joint = step if joint is None else step @ joint
    return joint


def gradient_rollout(attentions, grads):
    r = torch.eye(attentions[0].shape[-1], dtype=attentions[0].dtype).expand(len(attentions[0]), -1, -1)
    for a, g in zip(attentions, grads, strict=True):
        r = r + (g * a).clamp(min=0).mean(1) @ r
    return r


def state(model):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [p.detach().clone() for p in model.parameters()], model.config._attn_implementation,
            sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()))


def close(a, b):
    return torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def same(a, b):
    return a[:2] == b[:2] and all(torch.equal(p, q) for p, q in zip(a[2], b[2], strict=True)) and a[3:] == b[3:]


@pytest.mark.parametrize("cls, prefix", [("ViT", 1), ("DeiT", 2)])
def test_rollouts_on_vit_equal_the_hand_computation(cls, prefix):
    model = vit(cls)
    assert model.config._attn_implementation == "sdpa"             # fused: the engine must switch it for the call
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    attentions, grads = eager_reference(model, x, "pixel_values")
    assert len(attentions) == 2 and attentions[0].shape == (2, 4, 16 + prefix, 16 + prefix)
    before, wrapped = state(model), Logits(model)
    for method, joint in ((AttentionRollout(upsample=False), rollout(attentions)),
                          (GradientRollout(upsample=False), gradient_rollout(attentions, grads))):
        expected = joint[:, 0, prefix:].reshape(2, 4, 4)
        got = method(wrapped, x, target=1)
        assert close(got, expected)
        assert same(state(model), before)
    assert grads[0].abs().sum() > 0                                   # GradientRollout's gradients are not trivial
    one_at_a_time = GradientRollout(upsample=False)(wrapped, x, target=1, batch_size=1)
    assert close(one_at_a_time, gradient_rollout(attentions, grads)[:, 0, prefix:].reshape(2, 4, 4))
    last_patch = AttentionRollout(position=-1, upsample=False)(wrapped, x, target=1)
    assert close(last_patch, rollout(attentions)[:, -1, prefix:].reshape(2, 4, 4))
    with pytest.raises(ValueError, match="position=40 is outside the model's"):
        AttentionRollout(position=40)(wrapped, x)
    up = GradientRollout()(wrapped, x, target=1)
    assert up.shape == (2, 32, 32)
    grid = gradient_rollout(attentions, grads)[:, 0, prefix:].reshape(2, 1, 4, 4)
    expected = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    assert close(up, expected)


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama"])
def test_rollouts_on_text_models_equal_the_hand_computation(name):
    model = TEXT_MODELS[name]()
    last = name != "bert"
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    x = model.get_input_embeddings()(ids).detach()
    attentions, grads = eager_reference(model, x, "inputs_embeds", last=last)
    row = 6 if last else 0                             # causal: the last token predicts; bidirectional: [CLS]
    before, wrapped = state(model), Logits(model, "inputs_embeds", last=last)
    assert close(AttentionRollout()(wrapped, x, target=1), rollout(attentions)[:, row])
    assert close(GradientRollout()(wrapped, x, target=1), gradient_rollout(attentions, grads)[:, row])
    assert same(state(model), before)
    if not last:                                       # no gradient needed: token ids work as inputs too
        ids_model = Logits(model, "input_ids")
        assert close(AttentionRollout()(ids_model, ids, target=1), rollout(attentions)[:, 0])


def vit_explain_rollout(attentions, discard_ratio, head_fusion, columns=False):
    """jacobgil/vit-explain's ``rollout`` (vit_rollout.py), transcribed, on one image's attentions [1, heads,
    T, T]: heads fused; the int(T^2 x discard_ratio) smallest fused weights set to 0 except element [0, 0];
    (A + I) / 2; then ``a / a.sum(dim=-1)``. As written there (``columns``) that divides column j by row j's
    sum; otherwise rows are normalised, as Abnar & Zuidema and gradaudit. Returns the joint matrix [1, T, T]."""
    result = torch.eye(attentions[0].size(-1), dtype=attentions[0].dtype)
    for attention in attentions:
        fused = {"mean": lambda a: a.mean(axis=1), "max": lambda a: a.max(axis=1)[0],
                 "min": lambda a: a.min(axis=1)[0]}[head_fusion](attention)
        flat = fused.view(fused.size(0), -1)
        _, indices = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
        indices = indices[indices != 0]
        flat[0, indices] = 0
        eye = torch.eye(fused.size(-1), dtype=fused.dtype)
        a = (fused + 1.0 * eye) / 2
        a = a / a.sum(dim=-1) if columns else a / a.sum(dim=-1, keepdim=True)
        result = torch.matmul(a, result)
    return result


def test_head_fusion_and_discard_follow_vit_explain():
    model = vit()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    attentions, _ = eager_reference(model, x, "pixel_values")
    got = AttentionRollout(head_fusion="max", discard=0.5, upsample=False)(Logits(model), x, target=0)
    for b in range(2):
        one = [a[b:b + 1] for a in attentions]
        assert close(got[b], vit_explain_rollout(one, 0.5, "max")[0, 0, 1:].reshape(4, 4))
        assert not close(got[b], vit_explain_rollout(one, 0.5, "max", columns=True)[0, 0, 1:].reshape(4, 4))
        for fusion in ("mean", "min"):
            ours = AttentionRollout(head_fusion=fusion, upsample=False)(Logits(model), x[b:b + 1], target=0)[0]
            assert close(ours, vit_explain_rollout(one, 0.0, fusion)[0, 0, 1:].reshape(4, 4))
    # mean fusion, nothing dropped: rows sum to 1 (to float32 rounding: the softmax's), both normalisations agree
    assert torch.allclose(AttentionRollout(upsample=False)(Logits(model), x[:1], target=0)[0],
                          vit_explain_rollout([a[:1] for a in attentions], 0.0, "mean", columns=True)[0, 0, 1:]
                          .reshape(4, 4), rtol=1e-6)


class FixedAttention(nn.Module):
    """Self-attention with given probabilities [heads, T, T]: the hidden states plus their attended mean over
    heads; returns (hidden states, probabilities [B, heads, T, T]) as Hugging Face attention modules do."""

    def __init__(self, probabilities: torch.Tensor):
        super().__init__()
        self.register_buffer("probabilities", probabilities)

    def forward(self, h):
        p = self.probabilities.expand(len(h), -1, -1, -1)
        return h + p.mean(1) @ h, p


class Attended(nn.Module):
    """Token embeddings [B, T, D] through FixedAttention layers, then the mean token to 2 logits."""

    def __init__(self, probabilities: list[torch.Tensor]):
        super().__init__()
        self.layers = nn.ModuleList(FixedAttention(p) for p in probabilities)
        self.head = nn.Linear(3, 2).double()

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)[0]
        return self.head(x.mean(1))


def test_discard_keeps_only_element_0_0_as_vit_explain():
    """vit-explain drops the smallest fused weights wherever they are, the diagonal included, but never
    element [0, 0] (then one fewer is dropped): both cases are among the 8 smallest of these 4 x 4 layers."""
    logits = torch.randn(2, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    logits[0, :, 0, 0] = logits[0, :, 2, 2] = logits[1, :, 3, 3] = -8.0           # tiny [0, 0] and diagonal weights
    probabilities = list(logits.softmax(-1))
    fused = [p.mean(0).flatten() for p in probabilities]
    smallest = [set(f.topk(8, largest=False).indices.tolist()) for f in fused]
    assert 0 in smallest[0] and {10} <= smallest[0] and {15} <= smallest[1]     # [0, 0]; [2, 2]; [3, 3]
    x = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    got = AttentionRollout(discard=0.5)(Attended(probabilities).eval(), x)
    expected = vit_explain_rollout([p[None] for p in probabilities], 0.5, "mean")[0, 0]
    assert close(got, expected.expand(2, -1))


def bias_free(model: nn.Module, *names: str) -> nn.Module:
    """``model`` with its biases and the additive embeddings ``names`` zeroed (conservation holds exactly)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or any(n in name for n in names):
                p.zero_()
    return model


def test_cp_lrp_conserves_the_logit_on_bias_free_models():
    """Float64, measured relative error of the sum: ViT 2.0e-7, Llama 2.5e-7, GPT-2 5e-11 and BERT 2e-11 (there
    all of it the identity rule's 1e-10 stabiliser). With 1e-4 as the stabiliser ViT's sum is 0.13% off, which
    the earlier rtol 1e-2 let pass."""
    model = bias_free(vit(), "position_embeddings", "cls_token")
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    wrapped, before = Logits(model), state(model)
    relevance = AttnLRP(variant="cp")(wrapped, x, target=2)
    assert relevance.shape == x.shape and same(state(model), before)
    assert torch.allclose(relevance.flatten(1).sum(1), wrapped(x)[:, 2].detach(), rtol=1e-6, atol=0)
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(4))
    for model, names, last in ((gpt2(), ("wpe",), True), (bert(), ("position_embeddings", "token_type"), False),
                               (llama(), (), True)):                      # Llama: RMSNorm, gated MLP, rotary
        model = bias_free(model, *names)
        x = model.get_input_embeddings()(ids).detach()
        wrapped = Logits(model, "inputs_embeds", last=last)
        relevance = AttnLRP(variant="cp")(wrapped, x, target=1).sum((1, 2))
        assert torch.allclose(relevance, wrapped(x)[:, 1].detach(), rtol=1e-6, atol=0)
        assert not torch.allclose(AttnLRP()(wrapped, x, target=1).sum((1, 2)), relevance, rtol=1e-2)  # softmax absorbs


LXT_SCRIPT = textwrap.dedent('''
    import importlib.util, json, sys, types
    from functools import partial
    import torch
    import lxt
    root = lxt.__path__[0] + "/efficient"
    package = types.ModuleType("lxt.efficient")           # lxt.efficient's __init__ imports torchvision and zennit
    package.__path__ = [root]
    sys.modules["lxt.efficient"] = package
    from lxt.efficient.patches import (dropout_forward, gated_mlp_forward, layer_norm_forward, non_linear_forward,
                                       patch_method, rms_norm_forward, wrap_attention_forward)
    from transformers.models.bert import modeling_bert
    from transformers.models.gpt2 import modeling_gpt2
    from transformers.models.llama import modeling_llama
    from transformers.models.vit import modeling_vit
    from transformers import activations
    for module in (modeling_bert, modeling_gpt2, modeling_vit, modeling_llama):
        # lxt's own patch_attention also swaps ALL_ATTENTION_FUNCTIONS for a plain dict, which transformers 5
        # cannot call; the eager function is the one used, so only it is wrapped (with lxt's own wrapper). lxt's
        # BERT is a copy of transformers 4's modeling_bert (unusable with 5): its rules (uniform rule in attention,
        # identity rule on the intermediate GELU and the pooler's tanh) are composed here from lxt's own parts.
        module.eager_attention_forward = wrap_attention_forward(module.eager_attention_forward)
    patch_method(layer_norm_forward, torch.nn.LayerNorm)
    patch_method(dropout_forward, torch.nn.Dropout)
    patch_method(gated_mlp_forward, modeling_llama.LlamaMLP)
    patch_method(rms_norm_forward, modeling_llama.LlamaRMSNorm)
    for cls in (activations.NewGELUActivation, activations.GELUActivation, torch.nn.Tanh):
        patch_method(non_linear_forward, cls, keep_original=True)
    name, path = sys.argv[1], sys.argv[2]
    import transformers
    data = torch.load(path)
    config = getattr(transformers, data["config_class"]).from_dict(data["config"])
    model = getattr(transformers, data["model_class"])(config).double().eval()
    model.load_state_dict(data["state"])
    model.set_attn_implementation("eager")
    x = data["x"].clone().requires_grad_(True)
    key = "pixel_values" if name == "vit" else "inputs_embeds"
    logits = model(**{key: x}).logits
    logits = logits[:, -1] if name in ("gpt2", "llama") else logits
    logits[:, data["target"]].sum().backward()
    torch.save(x.grad * x.detach(), path + ".out")
''')


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "vit"])
def test_attnlrp_equals_lxt(name, tmp_path):
    model = vit() if name == "vit" else TEXT_MODELS[name]()
    if name != "vit":
        ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(5))
        x = model.get_input_embeddings()(ids).detach()
        wrapped = Logits(model, "inputs_embeds", last=name != "bert")
    else:
        x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        wrapped = Logits(model)
    path = tmp_path / "case.pt"
    torch.save({"config_class": type(model.config).__name__, "config": model.config.to_dict(),
                "model_class": type(model).__name__, "state": model.state_dict(), "x": x, "target": 2}, path)
    run = subprocess.run([sys.executable, "-c", LXT_SCRIPT, name, str(path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    expected = torch.load(str(path) + ".out")
    before = state(model)
    got = AttnLRP()(wrapped, x, target=2)
    assert same(state(model), before)
    assert torch.allclose(got, expected, atol=1e-9 * expected.abs().max().item(), rtol=1e-6), json.dumps(
        {"max_diff": float((got - expected).abs().max()), "scale": float(expected.abs().max())})
    leaf = x.clone().requires_grad_(True)
    plain = x * torch.autograd.grad(wrapped(leaf)[:, 2].sum(), leaf)[0]
    assert not torch.allclose(got, plain, atol=1e-3 * plain.abs().max().item())       # the rules did change something


def test_models_are_left_as_found_on_error_and_in_train_mode():
    model = vit()
    wrapped = Logits(model)
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    before = state(model)

    def failing(output):
        raise RuntimeError("target failed")

    for method in (AttentionRollout(), GradientRollout(), AttnLRP()):
        with pytest.raises(RuntimeError, match="target failed"):
            method(wrapped, x, target=failing)
        assert same(state(model), before)
    wrapped.train()
    with pytest.warns(UserWarning, match="train mode"):
        AttentionRollout()(wrapped, x)
    assert all(m.training for m in wrapped.modules()) and model.config._attn_implementation == "sdpa"


class TorchEncoder(nn.Module):
    """torch's own nn.TransformerEncoder and a linear head: its attention runs inside one call,
    ``F.multi_head_attention_forward``, where no probability, softmax or product can be caught."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.encoder, self.head = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


class PatchesOnly(nn.Module):
    """A Hugging Face ViT (sdpa) cut before its encoder: patch embeddings, their mean, a head; no attention runs."""

    def __init__(self):
        super().__init__()
        self.vit, self.head = vit(), nn.Linear(32, 2).double()

    def forward(self, x):
        return self.head(self.vit.vit.embeddings(x).mean(1))


def test_a_model_without_attention_is_refused():
    """Every attention method, AttnLRP in both variants, refuses a CNN, torch's nn.TransformerEncoder and a
    Hugging Face model whose attention never runs (never the activation and norm rules alone, which would be
    a map close to InputXGradient's); the model is left as found: flags, modes, hooks, attention implementation."""
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    cut = PatchesOnly()
    cases = ((cnn, torch.rand(1, 3, 8, 8)), (TorchEncoder(), torch.randn(2, 5, 16)),
             (cut, torch.rand(1, 3, 32, 32, dtype=torch.float64)))
    for model, x in cases:
        model.train()
        next(model.parameters()).requires_grad_(False)
        before = snapshot(model)
        for method in (AttentionRollout(), GradientRollout(), AttnLRP(), AttnLRP(variant="cp")):
            expected = (f"AttnLRP \\(variant '{method.variant}'\\) needs attention it can catch"
                        if isinstance(method, AttnLRP) else "caught no attention probabilities")
            with pytest.raises(ValueError, match=expected), pytest.warns(UserWarning, match="train mode"):
                method(model, x)
            assert_unchanged(model, before)
            assert cut.vit.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        AttentionRollout(head_fusion="median")
    with pytest.raises(ValueError, match="discard must be a fraction"):
        AttentionRollout(discard=1.0)
    with pytest.raises(ValueError, match="variant must be one of"):
        AttnLRP(variant="lrp")


def test_text_explainer_reads_the_predicting_position():
    torch.manual_seed(0)
    model = gpt2()

    class Tokens:
        """A whitespace tokenizer over 50 ids: enough for TextExplainer."""

        pad_token_id, all_special_ids = 0, [0]

        def __call__(self, s, add_special_tokens=True):
            return {"input_ids": [ord(w[0]) % 49 + 1 for w in s.split()]}

        def convert_ids_to_tokens(self, ids):
            return [str(i) for i in ids]

    tx = text.TextExplainer(model, Tokens(), add_special_tokens=False)
    before = state(model)
    prompt, cont = "a b c d e", "f g"
    ids = tx.encode(prompt) + list(tx.continuation(cont))
    x = model.get_input_embeddings()(torch.tensor([ids[:-1]])).detach()
    reference = copy.deepcopy(model)
    reference.set_attn_implementation("eager")
    out = reference(inputs_embeds=x, output_attentions=True)
    logp = torch.log_softmax(out.logits[0], -1)
    score = logp[4, ids[5]] + logp[5, ids[6]]
    grads = torch.autograd.grad(score, out.attentions)
    attentions = [a.detach() for a in out.attentions]
    r = tx.explain(prompt, cont, AttentionRollout())
    assert close(r.scores, rollout(attentions)[0, 4, :5])     # row 4 predicts the first token
    r = tx.explain(prompt, cont, GradientRollout())
    assert close(r.scores, gradient_rollout(attentions, grads)[0, 4, :5])
    r = tx.explain(prompt, cont, AttnLRP())
    assert r.scores.shape == (5,) and torch.isfinite(r.scores).all()
    assert same(state(model), before)


VIT_FACTORY = '''
import torch
import transformers


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def vit():
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config)
    torch.nn.init.normal_(model.classifier.weight, std=0.5)
    return Logits(model).eval()
'''


def test_explain_on_a_vit_factory_with_the_attention_methods_and_layer_auto(tmp_path):
    import gradaudit as ga

    (tmp_path / "uservit.py").write_text(VIT_FACTORY)
    sys.path.insert(0, str(tmp_path))
    try:
        from uservit import vit
    finally:
        sys.path.remove(str(tmp_path))
    model = vit()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "gradaudit", "explain", "--model", "uservit:vit", "--weights",
               str(tmp_path / "w.pt"), "--input", str(tmp_path / "x.pt"), "--target", "1",
               "--method", "gradcam,rollout,gradientrollout,attnlrp", "--out", str(tmp_path / "map.png"),
               "--save-maps", str(tmp_path / "maps.pt")]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "gradcam: layer='auto' chose 'model.vit.layers.1.layernorm_before'" in result.stdout
    saved = torch.load(tmp_path / "maps.pt", weights_only=True)
    expected = {"gradcam": ga.GradCAM("model.vit.layers.1.layernorm_before")(model, x, 1),
                "rollout": AttentionRollout()(model, x, 1), "gradientrollout": GradientRollout()(model, x, 1),
                "attnlrp": AttnLRP()(model, x, 1)}
    for name, maps in expected.items():
        assert torch.allclose(saved[name], ga.heatmap(maps), atol=1e-5), name
    assert (tmp_path / "map.png").stat().st_size > 1000
