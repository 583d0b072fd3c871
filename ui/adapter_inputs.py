"""The LoRA settings as people configure them (issue 11), as widgets: targets, dropout, adapter
dtype, modules to save, the frozen base, and WeLore's rank reduction. A widget is disabled when
the chosen method does not take its setting (the method record says: `Method.takes`); with no
method chosen (Compare) every setting is offered and each method drops what it has no use for.
"""
from __future__ import annotations

import streamlit as st

from planner import METHODS
from planner.spec import BASE_QUANTS

__all__ = ["adapter_inputs", "ADAPTER_FIELDS"]

DEFAULT = "default"
ON_OFF = {DEFAULT: None, "on": True, "off": False}
#: the spec fields these widgets set
ADAPTER_FIELDS = ("lora_targets", "lora_dropout", "adapter_dtype", "modules_to_save", "base_quant",
                  "double_quant", "kbit_upcast", "rank_reduction")


def _takes(method_id: str | None, option: str) -> bool:
    if method_id is None:
        return any(m.takes(option) for m in METHODS.values())
    return METHODS[method_id].takes(option)


def adapter_inputs(key: str, method_id: str | None) -> dict:
    """The adapter settings the user set (None: the method's / peft's default, stated in the
    result's assumptions), keyed by `TrainingSpec` field."""
    off = {f: not _takes(method_id, f) for f in ADAPTER_FIELDS}
    with st.expander("Adapter options (LoRA, QLoRA, DoRA, ...)"):
        targets = st.text_input("LoRA targets", key=f"{key}_lora_targets", disabled=off["lora_targets"],
                                placeholder="default: peft's (q_proj,v_proj for LLaMA)",
                                help="Module names such as q_proj,v_proj, or all-linear; lora and qlora "
                                     "also take embed_tokens and lm_head.")
        dropout = st.number_input("LoRA dropout", min_value=0.0, max_value=0.99, value=0.0, step=0.05,
                                  key=f"{key}_lora_dropout", disabled=off["lora_dropout"])
        dtype = st.selectbox("Adapter dtype", [DEFAULT, "fp32", "bf16", "fp16"], key=f"{key}_adapter_dtype",
                             disabled=off["adapter_dtype"], help="default: fp32, as peft keeps adapters")
        saved = st.multiselect("Modules to save (trained in full)", ["embed_tokens", "lm_head"],
                               key=f"{key}_modules_to_save", disabled=off["modules_to_save"],
                               help="peft's modules_to_save: a trainable copy beside the frozen original.")
        base = st.selectbox("Frozen base", [DEFAULT, *BASE_QUANTS], key=f"{key}_base_quant",
                            disabled=off["base_quant"], help="none, LLM.int8 or NF4 (QLoRA's)")
        c1, c2 = st.columns(2)
        double = c1.selectbox("NF4 double quantisation", list(ON_OFF), key=f"{key}_double_quant",
                              disabled=off["double_quant"])
        upcast = c2.selectbox("k-bit fp32 upcast", list(ON_OFF), key=f"{key}_kbit_upcast",
                              disabled=off["kbit_upcast"],
                              help="peft's prepare_model_for_kbit_training upcasts norms, embeddings, lm_head")
        reduction = st.number_input("WeLore rank reduction (blank: 0.5)", min_value=0.0, max_value=0.99,
                                    value=None, step=0.05, key=f"{key}_rank_reduction",
                                    disabled=off["rank_reduction"])
    values = {"lora_targets": targets.strip() or None, "lora_dropout": dropout or None,
              "adapter_dtype": None if dtype == DEFAULT else dtype,
              "modules_to_save": ",".join(saved) or None, "base_quant": None if base == DEFAULT else base,
              "double_quant": ON_OFF[double], "kbit_upcast": ON_OFF[upcast], "rank_reduction": reduction}
    return {f: (None if off[f] else v) for f, v in values.items()}
