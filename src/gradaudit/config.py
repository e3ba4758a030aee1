"""Library-wide settings users may change at run time (``ga.config``)."""

from dataclasses import dataclass


@dataclass
class Config:
    """Knobs for automatic chunking.

    memory_budget: bytes one chunk of model evaluations may use; ``None`` takes a quarter of
        the memory available now (free RAM on CPU, free device memory on CUDA).
    max_chunk_cpu / max_chunk_cuda: the largest number of rows per pass; on CPU big batches
        stop paying off long before memory runs out.
    """

    memory_budget: int | None = None
    max_chunk_cpu: int = 64
    max_chunk_cuda: int = 1024


config = Config()
