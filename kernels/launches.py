"""One kernel launch as data: the kernel, its grid, its arguments and meta-parameters.

A launcher checks its inputs, allocates its outputs and builds a ``KernelCall``; launching it is
one line. ``kernels/prebuilt.py`` builds the same calls on small CPU tensors to compile, ahead of
time and without a GPU, exactly the kernels the launchers will ask Triton for (Triton specializes
a kernel on its arguments' types, their alignment and their divisibility by 16, so the arguments
must come from the launchers' own code, not from a copy of it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import triton


@dataclass(frozen=True)
class KernelCall:
    kernel: Any                 # a triton.jit function (the interpreter's under TRITON_INTERPRET=1)
    grid: tuple
    args: tuple
    meta: dict = field(default_factory=dict)   # constexprs, and num_warps / num_stages where set

    def launch(self) -> None:
        self.kernel[self.grid](*self.args, **self.meta)

    def launch_tuned(self, tuner, rows: int, kept: tuple[str, ...]) -> None:
        """Launch through ``tuner`` (triton.autotune of this kernel) with the same arguments: the tuner
        supplies the tile and the launch options, so only the meta-parameters in ``kept`` are passed,
        and the grid's first axis covers ``rows`` in the tuner's BLOCK_M."""
        grid = lambda config: (triton.cdiv(rows, config["BLOCK_M"]), *self.grid[1:])  # noqa: E731
        tuner[grid](*self.args, **{key: self.meta[key] for key in kept})
