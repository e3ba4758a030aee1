"""Library-wide settings users may change at run time (``ga.config``)."""

from dataclasses import dataclass


@dataclass
class Config:
    """Knobs for automatic chunking (``batch_size=None``).

    memory_budget: bytes one pass may use; ``None`` takes a quarter of the memory available now
        (free RAM on CPU, free device memory on CUDA).
    cpu_working_set: on CPU, rows per pass aim at this much autograd memory (about the last-level
        cache). Past it a bigger batch runs slower per row (measured on 2 cores: the BlockMNIST
        CNN 1.4x slower per row at 250 rows than at 64), while models with small activations and
        big weights (a wide MLP) keep gaining from big batches.
    min_chunk: at least this many rows per pass (memory permitting), so each weight is reused
        across rows (a ResNet-18 at 64x64 runs best at 4 rows though one row fills the cache).
    max_chunk: the most rows per pass on any device.
    """

    memory_budget: int | None = None
    cpu_working_set: int = 32 * 2**20
    min_chunk: int = 4
    max_chunk: int = 4096


config = Config()
