"""The activation model against PyTorch itself: real CPU training steps under MemTracker.

For small LlamaForCausalLM, GPT2LMHeadModel and RobertaForMaskedLM models (transformers 5.24,
torch 2.13), eager and SDPA attention, fp32 and bf16, with and without full activation
checkpointing and LoRA (peft), one forward + backward runs under
`torch.distributed._tools.mem_tracker.MemTracker`, which files every tensor a dispatched op
creates as ACT (forward, and recomputation inside a checkpoint) or TEMP (backward), besides
PARAM, BUFFER and GRAD. The prediction (`kernels="cpu"`, the CPU run's dropout noise and SDPA
fallback) and the measurement describe the same two things:

* forward end: ACT in `get_tracker_snapshot()` right after `loss = model(...).loss` (the
  logits dropped with the model output, as HF Trainer's `compute_loss` does): every tensor
  saved for backward plus what the checkpoints and autograd leaves hold. ↔ `total`, within 1 %
  (the derivation is exact; it lands within a few bytes).
* backward peak: the largest ACT + TEMP after any op of the backward: saved and recomputed
  activations plus gradient temporaries. ↔ `peak_backward`, within 10 %. MemTracker's own
  `get_tracker_snapshot("peak")` is the peak of the *total* (parameters and gradients
  included); a small subclass records ACT + TEMP after every op instead.

Word embeddings are untied: a tied LM head's gradient waits in autograd's input buffer (TEMP)
until the embedding's backward, a parameter gradient the planner counts under gradients.
"""
import re

import pytest

pytestmark = pytest.mark.slow                   # 28 real steps, about 30 s on 2 cores
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType, _ModState  # noqa: E402

from planner.activations import activation_memory  # noqa: E402
from planner.dtypes import TORCH_NAMES  # noqa: E402
from planner.families import FAMILIES  # noqa: E402
from planner.models import config_from_dict  # noqa: E402

#: each family's tiny example config (its record's), the class a run builds, and LoRA on the
#: block linears only (the planner's targets), not RoBERTa's lm_head.dense.
FIELDS = {name: dict(f.example) for name, f in FAMILIES.items()}
AUTO = {name: f.head_class for name, f in FAMILIES.items()}
TARGETS = {name: r".*\.\d+\.(.*\.)?(" + "|".join(sorted({m.rpartition(".")[2] for m in f.linear_inputs}))
           + ")" for name, f in FAMILIES.items()}
BATCH, SEQ = 2, 128


class _NoHook:
    @staticmethod
    def remove() -> None:
        pass


class ActivationTracker(MemTracker):
    """MemTracker that also keeps the largest ACT + TEMP after any forward / backward op.

    It reads torch 2.13 internals (`_update_peak_stats`, `_curr_mem_snap`,
    `_param_to_grad_hook_handles`): MemTracker has no public per-category peak.
    """
    forward_peak = backward_peak = 0

    def _update_peak_stats(self, peak_state) -> None:        # runs after every dispatched op
        super()._update_peak_stats(peak_state)
        for snap in self._curr_mem_snap.values():
            now = snap[_MemRefType.ACT] + snap[_MemRefType.TEMP]
            if peak_state is _ModState.PEAK_BW:
                self.backward_peak = max(self.backward_peak, now)
            else:
                self.forward_peak = max(self.forward_peak, now)

    def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
        # torch 2.13 hooks every parameter's gradient, which raises for frozen (LoRA base) ones
        for p in module.parameters():
            if not p.requires_grad:
                self._param_to_grad_hook_handles.setdefault(p, (_NoHook, _NoHook))
        return super()._track_module_params_and_buffers(module, install_grad_hooks)


def tracked_step(model, ids) -> tuple[ActivationTracker, int]:
    """One forward + backward of a causal / masked LM on `ids` (as labels too) under an
    ActivationTracker: the tracker and ACT at the forward's end (the output, logits with it,
    dropped before backward)."""
    tracker = ActivationTracker()
    tracker.track_external(model, ids)
    with tracker:
        loss = model(input_ids=ids, labels=ids).loss
        forward_end = next(iter(tracker.get_tracker_snapshot().values()))[_MemRefType.ACT]
        loss.backward()
    return tracker, forward_end


def _regex(names):
    return r".*\.\d+\.(.*\.)?(" + "|".join(names) + ")"


def build(family, fields, attention, dtype, lora):
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(**fields)
    model = getattr(transformers, AUTO[family]).from_config(config, attn_implementation=attention)
    model = model.to(getattr(torch, TORCH_NAMES[dtype])).train()
    if lora:
        from peft import LoraConfig, get_peft_model
        rank, dropout, lora_dtype, *targets = lora
        model = get_peft_model(model, LoraConfig(r=rank, lora_dropout=dropout,
                                                 target_modules=_regex(targets[0]) if targets else TARGETS[family]),
                               autocast_adapter_dtype=lora_dtype == "fp32").train()
    return model


def measure(family, fields, attention, dtype, checkpointing, lora):
    """(ACT at the forward's end, largest ACT + TEMP in backward, layer forward counts)."""
    model = build(family, fields, attention, dtype, lora)
    if checkpointing == "full":
        model.activation_checkpointing_enable()      # gradient_checkpointing_enable's new name
    # each block's submodules (a checkpointed block re-runs them, not its own outer call)
    blocks = [m for n, m in model.named_modules() if re.search(r"\.\d+$", n)]
    calls = {id(b): 0 for b in blocks}

    def counter(block):
        def count(module, args):
            calls[id(block)] = max(calls[id(block)], seen.setdefault(id(module), 0) + 1)
            seen[id(module)] += 1
        return count
    seen: dict[int, int] = {}
    for b in blocks:
        for child in b.children():
            child.register_forward_pre_hook(counter(b))
    tracker, forward_end = tracked_step(model, torch.randint(3, fields["vocab_size"], (BATCH, SEQ)))
    # MemTracker's own peak (of the total) holds no more ACT + TEMP than the per-op record
    peak = next(iter(tracker.get_tracker_snapshot("peak").values()))
    assert (peak[_MemRefType.ACT] + peak[_MemRefType.TEMP]
            <= max(tracker.forward_peak, tracker.backward_peak))
    return forward_end, tracker.backward_peak, sorted(calls.values())


#: GPT-2's and RoBERTa's attention dropout off, so CPU SDPA runs its flash kernel (with it on,
#: SDPA falls back to the math kernel, which the bf16 cases below exercise).
NO_ATTN_DROPOUT = {"llama": {}, "gpt2": {"attn_pdrop": 0.0},
                   "roberta": {"attention_probs_dropout_prob": 0.0}}
BLOCKS = ("llama", "gpt2", "roberta")    # one of each block rule, in every configuration

CASES = [  # family, attention, dtype, checkpointing, LoRA (rank, dropout, adapter dtype), fields
    *[(f, "eager", "fp32", c, None, {}) for f in BLOCKS for c in ("none", "full")],
    *[(f, "sdpa", "fp32", c, None, NO_ATTN_DROPOUT[f]) for f in BLOCKS for c in ("none", "full")],
    *[(f, "sdpa", "bf16", c, None, {}) for f in BLOCKS for c in ("none", "full")],
    # a small vocabulary, where the recomputed layer's backward, not the loss, sets the peak
    *[(f, "eager", "fp32", "full", None, {"vocab_size": 128}) for f in BLOCKS],
    # every other family record: full fine-tuning both ways, and LoRA on peft's default targets
    # (transformers' default attention: SDPA, or eager where the family has no SDPA)
    *[c for f in FAMILIES if f not in BLOCKS for c in (
        (f, FAMILIES[f].attentions[0], "bf16", "none", None, {}), (f, "eager", "fp32", "full", None, {}),
        (f, FAMILIES[f].attentions[0], "bf16", "none",
         (8, 0.0, "fp32", *filter(None, [FAMILIES[f].lora_default_targets])), {}))],
    ("llama", "sdpa", "bf16", "full", None, {"vocab_size": 128}),
    ("gpt2", "sdpa", "fp32", "none", None, {**NO_ATTN_DROPOUT["gpt2"], "use_cache": False}),
    ("llama", "sdpa", "bf16", "none", (8, 0.05, "fp32"), {}),
    ("llama", "sdpa", "bf16", "full", (8, 0.05, "fp32"), {"vocab_size": 128}),
    ("gpt2", "sdpa", "fp32", "full", (8, 0.0, "fp32"), {}),
    ("roberta", "eager", "bf16", "none", (8, 0.1, "bf16"), {}),
    ("roberta", "sdpa", "bf16", "full", (8, 0.1, "bf16"), {"vocab_size": 128}),
    # LoRA on some linears only: peft's defaults, and an MLP-only set
    ("llama", "sdpa", "bf16", "none", (8, 0.0, "bf16", ("q_proj", "v_proj")), {}),
    ("llama", "sdpa", "bf16", "none", (8, 0.0, "fp32", ("q_proj", "v_proj")), {}),
    ("llama", "eager", "fp32", "none", (8, 0.05, "fp32", ("q_proj", "v_proj")), {}),
    ("llama", "sdpa", "bf16", "full", (8, 0.0, "fp32", ("q_proj", "v_proj")), {"vocab_size": 128}),
    ("llama", "sdpa", "bf16", "none", (8, 0.0, "bf16", ("gate_proj", "up_proj", "down_proj")), {}),
    ("gpt2", "sdpa", "fp32", "none", (8, 0.0, "fp32", ("c_attn",)), {**NO_ATTN_DROPOUT["gpt2"]}),
    ("roberta", "sdpa", "bf16", "none", (8, 0.1, "fp32", ("query", "value")), {}),
    ("gpt2", "eager", "fp32", "none", (8, 0.05, "fp32", ("c_fc", "c_proj")), {}),
    ("roberta", "eager", "bf16", "none", (8, 0.0, "bf16", ("key",)), {}),
]


def _id(case):
    family, attention, dtype, ckpt, lora, extra = case
    return "-".join([family, attention, dtype, ckpt] + (["lora" + "".join(f"-{lora[2]}-p{lora[1]}")]
                                                         + ["+".join(lora[3])] if lora and len(lora) > 3
                                                         else ["lora"] if lora else [])
                    + [f"{_SHORT.get(k, k)}{v}" for k, v in extra.items()])


_SHORT = {"vocab_size": "V", "attn_pdrop": "attn_p", "attention_probs_dropout_prob": "attn_p",
          "use_cache": "cache"}


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_prediction_matches_memtracker(case):
    check_case(case)


def check_case(case):
    """One (family, attention, dtype, checkpointing, LoRA, extra fields) case: the prediction
    against MemTracker; family test modules call it for their own special cases."""
    family, attention, dtype, checkpointing, lora, extra = case
    fields = {**FIELDS[family], **extra}
    forward_end, backward_peak, calls = measure(family, fields, attention, dtype, checkpointing,
                                                lora)
    lora_kw = dict(zip(("lora_rank", "lora_dropout", "lora_dtype", "lora_targets"), lora)) if lora else {}
    predicted = activation_memory(config_from_dict(fields, "tiny"), batch=BATCH, seq=SEQ,
                                  dtype=dtype, attention=attention, checkpointing=checkpointing,
                                  kernels="cpu", **lora_kw)
    assert abs(predicted.total / forward_end - 1) <= 0.01, (predicted.total, forward_end)
    assert abs(predicted.peak_backward / backward_peak - 1) <= 0.10, (predicted.peak_backward,
                                                                     backward_peak)
    # checkpointing recomputes every layer once in backward: each block runs twice
    assert calls == [2 if checkpointing == "full" else 1] * 2
