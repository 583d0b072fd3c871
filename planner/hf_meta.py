"""Meta-device enumeration of a Hugging Face model's parameters (imports transformers lazily).

Only this module touches transformers/accelerate; the planner imports it on demand.
"""
from __future__ import annotations

import contextlib
import difflib
import io
import logging

__all__ = ["enumerate_parameters", "model_class"]

_HEADS = ("AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModel")
#: what to do about a config transformers cannot build (memfit sizes any config it can)
_FIX = ("correct the field it names (compare with the model's config.json on the Hugging Face "
        "Hub), or name a catalog model (python -m planner models)")


def model_class(transformers, config, architectures):
    """The transformers class that trains a config: its `architectures` entry, else the first
    auto head (causal LM, masked LM, base model) that knows the config's class."""
    for arch in architectures or []:
        cls = getattr(transformers, str(arch), None)
        if cls is not None and getattr(cls, "config_class", None) is type(config):
            return cls
    for head in _HEADS:
        auto = getattr(transformers, head)
        if type(config) in auto._model_mapping:
            return auto._model_mapping[type(config)]
    raise ValueError(f"transformers has no model class for model_type {config.model_type!r}")


def enumerate_parameters(d: dict, label: str, remote_code: bool = False
                         ) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, owning module class name) for every distinct parameter, tied weights once.
    `remote_code`: the config had an `auto_map`, which is never run."""
    import transformers
    from accelerate import init_empty_weights

    fields = {k: v for k, v in d.items() if k not in ("aliases", "source", "architectures",
                                                        "_name_or_path", "transformers_version")}
    model_type = fields.pop("model_type")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    known = transformers.CONFIG_MAPPING
    if model_type not in known:
        if remote_code:
            raise ValueError(f"{label}: model_type {model_type!r} exists only as remote code "
                             f"('auto_map'), which memfit never runs; the installed transformers "
                             f"{transformers.__version__} has no built-in class for it")
        close = difflib.get_close_matches(str(model_type), list(known.keys()), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{label}: field 'model_type' = {model_type!r} is not an architecture the "
                         f"installed transformers {transformers.__version__} can build{hint}")
    try:
        config = transformers.AutoConfig.for_model(model_type, **fields)
    except Exception as err:  # noqa: BLE001 - a config transformers cannot read is the config's fault
        raise ValueError(f"{label}: transformers rejected this config ({type(err).__name__}): "
                         f"{str(err)[:300]}; {_FIX}") from None
    cls = model_class(transformers, config, d.get("architectures"))
    try:
        with init_empty_weights(), contextlib.redirect_stderr(io.StringIO()):
            model = cls._from_config(config)
        model.tie_weights()   # init_empty_weights skips tying in transformers 5
    except Exception as err:  # noqa: BLE001 - any build failure is the config's fault here
        raise ValueError(f"{label}: transformers could not build {cls.__name__} from this config: "
                         f"{type(err).__name__}: {str(err)[:300]}; {_FIX}") from None
    return [(name, tuple(p.shape), type(model.get_submodule(name.rpartition(".")[0])).__name__)
            for name, p in model.named_parameters()]
