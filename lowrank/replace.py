"""Find the block linears a method targets and swap them for the method's own module.

QLoRA (4-bit base), SVFit and WeLore all replace ``nn.Linear`` modules in place; the targets are
module-name suffixes inside a numbered block (:func:`lowrank.lora.lora_target_regex`), the same
rule peft is given for LoRA, so every method adapts the same linears for the same ``targets``.
"""

from __future__ import annotations

import re

from torch import nn

__all__ = ["target_linears", "set_submodule"]


def target_linears(model: nn.Module, targets) -> list[tuple[str, nn.Linear]]:
    """``(qualified name, module)`` of every plain ``nn.Linear`` matching ``targets``.

    Raises ``ValueError`` when nothing matches (a misspelt target would otherwise train nothing).
    """
    from .lora import lora_target_regex

    pattern = re.compile(lora_target_regex(tuple(targets)))
    found = [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear and pattern.fullmatch(name)]
    if not found:
        raise ValueError(f"no nn.Linear matches the targets {list(targets)} inside numbered blocks "
                         "(GPT-2's Conv1D layers are not nn.Linear)")
    return found


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``module``."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
