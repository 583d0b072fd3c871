"""The burst contract with the planner (docs/storage-contract.md), shared by the burst tests:
held bytes equal exactly, activations and the step's peak within 10 %."""
import json

#: the components held as storages (in a burst and in a trace): the planner's sizes must equal them exactly
STATIC = ("weights", "gradients", "optimizer_states", "projection", "adapters")


def write_example(folder, family: str) -> str:
    """The family record's tiny example config as a config.json under `folder`; its path."""
    from planner.families import FAMILIES
    path = folder / f"{family}.json"
    path.write_text(json.dumps(dict(FAMILIES[family].example)))
    return str(path)


def assert_equals_the_planner(comparison, label: str) -> None:
    """Held bytes exact; activations and the peak within 10 % (MemTracker's view of the step)."""
    wrong = {c: (comparison[c].predicted_bytes, comparison[c].measured_bytes)
             for c in STATIC if comparison[c].abs_error}
    assert not wrong, f"{label}: (predicted, measured) {wrong}"
    for component in ("activations", "peak"):
        assert abs(comparison[component].relative_error) <= 0.10, (label, comparison[component])
