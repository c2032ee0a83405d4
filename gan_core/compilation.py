"""``train.compile``: ``torch.compile`` of the networks a training step runs, in place.

What is compiled, and why (both training apps; ``compile_in_place``):

- The generator, the critic's differentiable body and VGG-19 (when the loss uses it), each with
  ``nn.Module.compile`` (in place: parameters, buffers and ``state_dict`` keys are unchanged, so
  checkpoints hold no ``_orig_mod.`` prefixes and resume into eager or compiled runs alike). Their
  forward and backward graphs are what a step is made of: Inductor fuses every BatchNorm / InstanceNorm /
  LeakyReLU / normalization division (``W / s``, ``W / sigma``) and the circular padding (the
  ``torch.cat`` form of :func:`gan_core.norm.circular_pad2d`) into the neighbouring kernels, one graph per
  call signature (training with gradients, frozen critic, generator under ``no_grad``).
- On CUDA with ``mode="reduce-overhead"``: CUDA graphs (cudagraph trees). The SR critic's update at batch 16
  is launch- and Python-bound (~9 ms for well under 1 ms of arithmetic on an H200, issue 9), which graph
  replay removes. Elsewhere ``mode="default"``.
- The SR critic's random crop stays eager (``SRCritic.forward`` draws its offset on the host from its own
  generator): only ``features`` and ``head`` are compiled, so a new offset is a new view of the same
  shape, not a recompilation.

Beside the compiled regions, eager: the losses (a few scalars), the optimizers, the EMA, the SAN / SN
refresh (``refresh_norm_constants``: on the CPU the certified incremental SAN maximum is data-dependent by
design) and validation (``eager_calls``: eval-mode generators at other shapes are not worth compiling).
The refresh updates the norms' buffers in place (``s``, ``u``, ``v``), so the compiled graphs (and
captured CUDA graphs, which read fixed addresses) see every new constant.

Exactness: compiled code computes the same functions with other kernels, so it matches eager up to
floating-point rounding (fused reductions sum in another order); a compiled run resumed from a
checkpoint recompiles the same graphs for the same shapes and repeats an uninterrupted compiled run
exactly (tests/sr_app/test_compile.py, tests/translate_app/test_compile.py).

State that norms create on first use (a SAN layer's input grid and first constant, SN's initial power
iterations) is created before compiling by ``initialize_first_use_state``, so the compiled graphs never
contain those data-dependent branches (no graph break, no recompilation at step 2).
"""

from __future__ import annotations

import contextlib
import inspect

import torch
from torch import nn

from .runtime import Runtime

__all__ = ["compile_in_place", "compile_mode", "eager_calls", "initialize_first_use_state"]


def compile_mode(device: torch.device) -> str:
    """``"reduce-overhead"`` (CUDA graphs) on CUDA, ``"default"`` elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def compile_in_place(modules: dict[str, nn.Module | None], device: torch.device) -> str:
    """``module.compile(mode=compile_mode(device), dynamic=False)`` for every module that is not None.

    Args:
        modules: label -> module (the label is for the log line); None entries are skipped.
        device: where the modules run (picks the mode).

    Returns:
        One line for the run's log, e.g. ``"G, D.features, D.head (torch.compile, mode=default)"``.
    """
    options = {"mode": compile_mode(device), "dynamic": False}
    if "isolate_recompiles" in inspect.signature(torch.compile).parameters:
        # every in-place compiled module runs the same code object (Module._call_impl): without isolation
        # their graphs share one recompile limit (8), which a second run in the same process would exhaust
        options["isolate_recompiles"] = True
    names = []
    for name, module in modules.items():
        if module is not None:
            module.compile(**options)
            names.append(name)
    return f"{', '.join(names)} (torch.compile, mode={options['mode']})"


@torch.no_grad()
def initialize_first_use_state(module: nn.Module, example: torch.Tensor, rt: Runtime) -> None:
    """One eval-mode, gradient-free forward of ``module`` on ``example`` (a batch of the training shape),
    run eagerly before compiling.

    It creates what normalized layers create on their first call (SAN: the input grid and the first
    constant; SN / BSSN: the 15 initial power iterations) from the current weights, exactly as the first
    training forward would, and changes nothing else: eval mode updates no BatchNorm statistics and makes
    the SR critic take its centre crop (no random draw). A no-op for a restored module (that state is in
    its checkpoint). ``module`` is left in the mode it was in.
    """
    was_training = module.training
    module.eval()
    try:
        with rt.autocast():
            module(example)
    finally:
        module.train(was_training)


def eager_calls():
    """Context in which compiled modules run their original eager code (validation, samples, FID: other
    shapes and eval mode, rare enough that compiling them would cost more than it saves)."""
    if hasattr(torch.compiler, "set_stance"):
        return torch.compiler.set_stance("force_eager")
    return contextlib.nullcontext()
