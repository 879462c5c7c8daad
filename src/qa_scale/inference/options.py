"""How trained readers are loaded and run: one typed settings object for every command that reads models.

``qa-scale predict``, ``answer`` and ``serve`` register these flags once (:func:`add_reader_arguments`)
and build one :class:`ReaderOptions` from them (:meth:`ReaderOptions.from_arguments`); the window
and decode fields given on the command line ride along as overrides of each model's training config
(see :func:`qa_scale.inference.reader.reader_settings`). Kept free of torch, so that ``--help`` is
instant.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from ..common.settings import add_arguments, check_fields, from_arguments, given, option

Device = Literal["auto", "cuda", "cpu"]
Compute = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class ReaderOptions:
    """The tokenizer, window and decode overrides, device, compute dtype and batch size of readers."""

    tokenizer: str | None = option(
        None, "vocab.txt, tokenizer directory or hub name for every model (default: each model directory's own, "
              "else its training config's)")
    device: Device = option("auto", "auto: CUDA when torch has it (an error when GPUs are visible but unusable); "
                                    "cpu on purpose")
    compute: Compute = option(
        "auto", "dtype of the forward pass. auto: fp32 for predict (a store is a record: the same bits on any "
                "machine); bf16 for answer and serve where the device multiplies bf16 natively (a CUDA GPU with "
                "bf16, a CPU with AMX or AVX-512 BF16), else fp32. bf16/fp16 for GPUs; bf16 also runs on CPUs")
    batch_size: int | Literal["auto"] = option(
        128, "windows per forward pass (per rank under the launcher): fewer, larger passes, which matters most on "
             "shared CPU cores (bench/bench_cpu_contention.py); predict also takes 'auto': the largest that fits in "
             "memory, one process only", ge=1)
    threads: int | Literal["auto"] = option(
        "auto", "CPU threads of the forward pass (auto: torch's choice, one per core or a rank's share)", ge=1)
    cpu_wait: Literal["short", "passive", "default"] = option(
        "short", "how waiting CPU threads wait: short (spin briefly, then sleep: ~2x faster than default when other "
                 "processes share the cores, no slower on an idle machine), passive (sleep at once: faster still when "
                 "shared, 6-17%% slower when idle) or default (OpenMP's long spin). OMP_WAIT_POLICY or "
                 "GOMP_SPINCOUNT in the environment wins")
    windows: Mapping[str, Any] = field(default_factory=dict, metadata={
        "flag": False, "help": "WindowConfig fields over each model's training config"})
    decoding: Mapping[str, Any] = field(default_factory=dict, metadata={
        "flag": False, "help": "DecodeConfig fields over the (first) model's training config"})

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> "ReaderOptions":
        """The options given on a command line registered with :func:`add_reader_arguments`."""
        from ..data.windows import WindowConfig
        from ..evaluation.decode import DecodeConfig

        return from_arguments(cls, args, windows=given(args, WindowConfig), decoding=given(args, DecodeConfig))

    def prepare_process(self) -> dict:
        """Set this process's CPU threads and how they wait (:func:`qa_scale.runtime.cpu.prepare_cpu`):
        call it before torch loads, i.e. before importing the reading modules."""
        from ..runtime.cpu import prepare_cpu

        return prepare_cpu(self.cpu_wait, self.threads)

    def replace(self, **changes: Any) -> "ReaderOptions":
        return dataclasses.replace(self, **changes)

    def fixed_batch(self, command: str) -> int:
        """The batch size, refusing ``auto`` where ``command`` cannot search one."""
        if self.batch_size == "auto":
            raise ValueError(f"--batch-size auto is for predict; {command} needs a number")
        return int(self.batch_size)


def add_reader_arguments(p: argparse.ArgumentParser, defaults_from: str = "the models' training config") -> None:
    """``--tokenizer --device --compute --batch-size`` and the window and decode flags."""
    from ..data.windows import WindowConfig
    from ..evaluation.decode import DecodeConfig

    add_arguments(p, ReaderOptions, "readers: tokenizer, device, dtype, batch")
    add_arguments(p, WindowConfig, f"window settings (default: {defaults_from}, else the values below)")
    add_arguments(p, DecodeConfig, f"decoding (default: {defaults_from}, else the values below)")
