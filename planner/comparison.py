"""`compare`: every method (and precision) for one model, as one table."""
from __future__ import annotations

from collections.abc import Iterable

from .estimate import estimate
from .methods import METHOD_IDS, PEFT_DEFAULTS, get_method
from .spec import PRECISIONS, TrainingSpec

__all__ = ["compare", "compare_records", "method_specs"]

_METHOD_OPTIONS = ("rank", "update_proj_gap", "scale", "proj_type", "rank_reduction")


def method_specs(base: TrainingSpec, methods: Iterable[str] | None = None,
                 precisions: Iterable[str] | None = None) -> list[TrainingSpec]:
    """One spec per method x precision. Options a method lacks (a rank for adamw) are dropped for
    that method, so "rank 64" means rank 64 wherever there is a rank."""
    specs = []
    for mid in methods or METHOD_IDS:
        method = get_method(mid)
        drop = {o: None for o in _METHOD_OPTIONS if o not in method.options}
        # LoRA settings mean nothing to a method that does not take them (svfit has no dropout)
        drop |= {o: unset for o, unset in {"lora_targets": None, **PEFT_DEFAULTS}.items()
                 if not method.takes(o)}
        fixed = {"states": None} if method.eight_bit or method.states_fixed else {}
        for precision in precisions or [base.precision]:
            specs.append(base.replace(method=method.id, precision=precision, **drop, **fixed))
    return specs


def compare_records(base: TrainingSpec, methods=None, precisions=None) -> list[dict]:
    """Flat rows (spec, components, peak, fit) for every method; an unsupported combination
    becomes a row with its reason in `error` rather than stopping the comparison."""
    rows = []
    for spec in method_specs(base, methods, precisions):
        try:
            rows.append({**estimate(spec).to_row(), "error": ""})
        except ValueError as err:
            rows.append({**spec.as_dict(), "error": str(err)})
    return rows


def compare(model: str = "llama-7b", gpu: str | None = None, methods=None, precisions=None,
            all_precisions: bool = False, **options):
    """A pandas DataFrame, one row per method (x precision when `all_precisions`)."""
    import pandas as pd
    base = TrainingSpec(model=model, gpu=gpu, **options)
    if all_precisions:
        precisions = tuple(PRECISIONS)
    return pd.DataFrame(compare_records(base, methods, precisions))
