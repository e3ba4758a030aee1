"""Influence of training text on a language model: gradaudit (``text.influence``'s core) vs kronfluence.

    python benchmarks/bench_text_influence.py             # 120 sequences, 40 queries, 3 repeats
    python benchmarks/bench_text_influence.py --facts 200 # 600 sequences

The model and corpus of ``tests/test_text_influence.py``: a 2-layer GPT-2 (width 64) over a 112-word WordPiece
vocabulary, trained here for 400 full-batch Adam steps on facts ("the code of X is Y", each in one sequence)
and two distractors per fact; the queries are "the code of X is" -> " Y". Both fit EK-FAC on the MLP weights
(mlp.c_fc, mlp.c_proj of both blocks; kronfluence on the Linear twin of each Conv1D, which it cannot track),
with the empirical Fisher (so both estimate the same G and the scores can be compared), padded sequences
with their attention mask, the training loss summed over tokens and the measurement log p(completion |
prompt), float32 as kronfluence's defaults, batches of 16 sequences, query gradients at full rank, one thread
(``--threads``: on shared cores more threads only contend for these small matrices). A third row scores with
the query gradients at rank 32 (``text.influence``'s default), kept factored: its peak memory beside full
rank's, the bytes of query gradients each holds, and its correlation with full rank.
Times: fastest of ``--repeats`` fits and scorings, in one process, sequences per second. kronfluence's times
include writing its factors and scores to disk, as it always does. Peak memory: each case alone in its own
subprocess (on the model trained once here, its weights passed in a temporary file), the peak RSS of one fit +
score above the RSS before it (Linux clear_refs). "check": the largest
difference of the [Q, N] scores over the largest |score| of kronfluence's. Other jobs share the cores; the
load average is printed.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F
from peak_memory import reset_peak, status_mb
from torch import nn

FRAME = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "the", "code", "of", "is", "home", "colour"]
NAMES = [f"transformer.h.{i}.mlp.{p}" for i in (0, 1) for p in ("c_fc", "c_proj")]
BATCH = 16
RANK = 32
CASES = ("gradaudit", f"rank {RANK}", "kronfluence")




def setup(facts: int, weights: str | None = None):
    """(model, tokenizer, training (x, y), queries (x, y)) as the test builds them, the model trained here (or
    its trained weights read from ``weights``)."""
    import transformers

    from gradaudit.influence.sequences import IGNORE

    entities, codes = [f"ent{i}" for i in range(facts)], [f"val{i}" for i in range(facts)]
    places, colours = [f"loc{i}" for i in range(12)], [f"col{i}" for i in range(8)]
    vocab = FRAME + entities + codes + places + colours
    tokenizer = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    g = torch.Generator().manual_seed(0)
    texts = ([f"the code of {e} is {c} ." for e, c in zip(entities, codes, strict=True)]
             + [f"the home of {e} is {places[int(torch.randint(12, (1,), generator=g))]} ." for e in entities]
             + [f"the colour of {c} is {colours[int(torch.randint(8, (1,), generator=g))]} ." for c in codes])

    def batch(sequences, firsts):
        x = torch.zeros(len(sequences), max(map(len, sequences)), dtype=torch.long)
        y = torch.full_like(x, IGNORE)
        for i, (s, first) in enumerate(zip(sequences, firsts, strict=True)):
            x[i, :len(s)] = torch.tensor(s)
            y[i, first:len(s)] = torch.tensor(s[first:])
        return x, y

    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    train = batch(ids, [0] * len(ids))
    heads = [tokenizer(f"the code of {e} is", add_special_tokens=False)["input_ids"] for e in entities]
    tails = [tokenizer(f" {c}", add_special_tokens=False)["input_ids"] for c in codes]
    queries = batch([h + t for h, t in zip(heads, tails, strict=True)], [len(h) for h in heads])
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=16, vocab_size=len(tokenizer),
                                     bos_token_id=2, eos_token_id=3, pad_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    if weights is not None:
        model.load_state_dict(torch.load(weights, weights_only=True))
        return model.eval().requires_grad_(True), tokenizer, train, queries
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        logits = model(input_ids=train[0]).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), train[0][:, 1:].flatten(), ignore_index=0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(True), tokenizer, train, queries


def linear_twin(model: nn.Module) -> nn.Module:
    """The model with each MLP Conv1D replaced by the nn.Linear of its transposed weight (what kronfluence tracks)."""
    twin = copy.deepcopy(model)
    for block in twin.transformer.h:
        for name in ("c_fc", "c_proj"):
            conv = getattr(block.mlp, name)
            linear = nn.Linear(conv.weight.shape[0], conv.nf)
            linear.weight.data, linear.bias.data = conv.weight.data.T.clone(), conv.bias.data.clone()
            setattr(block.mlp, name, linear)
    return twin


def gradaudit_case(model, train, queries, rank=None):
    from gradaudit import influence
    from gradaudit.influence.sequences import TokenLoss, log_probability

    def fit():
        return influence.fit(model, train, strategy="ekfac", layers=NAMES, loss=TokenLoss(), fisher="empirical",
                             batch_size=BATCH)

    def score(fitted):
        return fitted.scores(queries, train, measurement=log_probability, rank=rank)

    return fit, score


def kronfluence_case(model, train, queries, folder):
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    from gradaudit.influence.sequences import IGNORE, TokenLoss, log_probability

    class LanguageModel(Task):
        def compute_train_loss(self, batch, model, sample=False):
            return TokenLoss()(model(input_ids=batch[0]), batch[1]).sum()

        def compute_measurement(self, batch, model):
            return -log_probability(model(input_ids=batch[0]), batch[1]).sum()

        def get_influence_tracked_modules(self):
            return NAMES

        def get_attention_mask(self, batch):
            return (batch[1] != IGNORE).long()

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, data):
            self.x, self.y = data

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i], self.y[i]

    peer = prepare_model(linear_twin(model), LanguageModel())
    analyzer = Analyzer(analysis_name="lm", model=peer, task=LanguageModel(), output_dir=folder, disable_tqdm=True,
                        disable_model_save=True)

    def fit():
        analyzer.fit_all_factors("factors", dataset=Pairs(train), per_device_batch_size=BATCH,
                                 factor_args=FactorArguments(strategy="ekfac", use_empirical_fisher=True),
                                 overwrite_output_dir=True)
        return analyzer

    def score(_):
        analyzer.compute_pairwise_scores("scores", factors_name="factors", query_dataset=Pairs(queries),
                                         train_dataset=Pairs(train), per_device_query_batch_size=len(queries[0]),
                                         per_device_train_batch_size=BATCH,
                                         score_args=ScoreArguments(damping_factor=None), overwrite_output_dir=True)
        return analyzer.load_pairwise_scores("scores")["all_modules"]

    return fit, score


def make(case: str, model, train, queries, folder):
    if case == "kronfluence":
        return kronfluence_case(model, train, queries, folder)
    return gradaudit_case(model, train, queries, rank=RANK if case == f"rank {RANK}" else None)


def query_mb(model, queries: int, rank: int | None) -> float:
    """MB of the preconditioned query gradients held while scoring (float32): Q x out x in per layer, or at rank
    r (below min(out, in)) Q x r x (out + in)."""
    from gradaudit.influence.layers import tracked_layers

    total = 0
    for layer in tracked_layers(model, NAMES):
        out, inp = layer.shape
        total += queries * (out * inp if rank is None or rank >= min(out, inp) else rank * (out + inp))
    return total * 4 / 2**20


def memory(case: str, facts: int, weights: str) -> float:
    """Peak RSS (MB) above the start of one fit + score of ``case``, after a warm-up run."""
    model, _, train, queries = setup(facts, weights)
    with tempfile.TemporaryDirectory() as folder:
        fit, score = make(case, model, train, queries, folder)
        score(fit())
        ctypes.CDLL("libc.so.6").malloc_trim(0)      # freed heap back to the system: the peak is not hidden by
        base = reset_peak()                          # memory the warm-up left mapped
        score(fit())
        return status_mb("VmHWM") - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1 by default)")
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    if args.memory_case:
        print(json.dumps({"peak_mb": memory(args.memory_case, args.facts, args.weights)}))
        return
    print(f"load average before: {os.getloadavg()}", flush=True)
    model, _, train, queries = setup(args.facts)
    n, q = len(train[0]), len(queries[0])
    found = {}
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "model.pt")
        torch.save(model.state_dict(), weights)
        for case in CASES:
            fit, score = make(case, model, train, queries, folder)
            fits, scores = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fitted = fit()
                fits.append(time.perf_counter() - start)
                start = time.perf_counter()
                result = score(fitted)
                scores.append(time.perf_counter() - start)
            found[case] = {"fit": min(fits), "score": min(scores), "scores": result.detach().double()}
        for case in CASES:
            out = subprocess.run([sys.executable, __file__, "--facts", str(args.facts), "--threads",
                                  str(args.threads), "--memory-case", case, "--weights", weights],
                                 capture_output=True, text=True, check=True).stdout
            found[case]["peak"] = json.loads(out.strip().splitlines()[-1])["peak_mb"]
    check = float((found["gradaudit"]["scores"] - found["kronfluence"]["scores"]).abs().max()
                  / found["kronfluence"]["scores"].abs().max())
    low, full = found[f"rank {RANK}"]["scores"].flatten(), found["gradaudit"]["scores"].flatten()
    print(f"{n} training sequences, {q} queries, EK-FAC on {', '.join(NAMES)}")
    print(f"{'':12} {'fit s':>8} {'seq/s':>8} {'score s':>8} {'seq/s':>8} {'peak MB':>8}")
    for case in CASES:
        row = found[case]
        print(f"{case:12} {row['fit']:8.2f} {n / row['fit']:8.0f} {row['score']:8.2f} {n / row['score']:8.0f} "
              f"{row['peak']:8.0f}")
    print(f"check: max |gradaudit - kronfluence| / max |kronfluence| = {check:.2e}")
    print(f"query gradients held while scoring: {query_mb(model, q, None):.1f} MB whole, "
          f"{query_mb(model, q, RANK):.1f} MB at rank {RANK} (kept factored); peak RSS {found['gradaudit']['peak']:.0f}"
          f" vs {found[f'rank {RANK}']['peak']:.0f} MB; Pearson of rank {RANK} with full rank "
          f"{float(torch.corrcoef(torch.stack([low, full]))[0, 1]):.4f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
