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


@dataclass(frozen=True)
class KernelCall:
    kernel: Any                 # a triton.jit function (the interpreter's under TRITON_INTERPRET=1)
    grid: tuple
    args: tuple
    meta: dict = field(default_factory=dict)   # constexprs, and num_warps / num_stages where set

    def launch(self) -> None:
        self.kernel[self.grid](*self.args, **self.meta)
