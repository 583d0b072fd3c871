"""`python -m planner`: estimate, compare, models, gpus, methods — as table, JSON or CSV."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .breakdown import COMPONENT_COLUMNS, COMPONENTS
from .device_count import devices_text
from .format import human_bytes, render
from .loss import LOSS_IMPLS
from .spec import (ATTENTIONS, BASE_QUANTS, CHECKPOINTING, IMPLS, LORA_INITS, LOSSES, OFFLOADS,
                   PRECISIONS, SHARDINGS, TrainingSpec)

__all__ = ["main", "build_parser", "spec_from_args", "run_command", "check_output", "EXIT_PIPE"]


def _on_off(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


#: spec flags beyond --model/--config/--method: (flag, TrainingSpec field, argparse options)
SPEC_FLAGS = [
    ("--gpu", "gpu", dict(help="GPU name (see `gpus`) or a capacity such as 24GB")),
    ("--rank", "rank", dict(type=int)),
    ("--update-proj-gap", "update_proj_gap", dict(type=int)),
    ("--scale", "scale", dict(type=float)),
    ("--proj-type", "proj_type", dict(help="std, reverse_std, left, right or full")),
    ("--layerwise", "layerwise", dict(action="store_true", default=None, help="layer-wise weight updates")),
    ("--precision", "precision", dict(choices=list(PRECISIONS),
                                      help="default: bf16, or amp-fp16 on a GPU without bf16")),
    ("--weights", "weights", dict(help="weight format: fp32 bf16 fp16 (an adapter method's frozen base)")),
    ("--grads", "grads", dict(help="gradient format: fp32 bf16 fp16")),
    ("--states", "states", dict(help="optimizer-state format: fp32 bf16 fp16")),
    ("--projection", "projection", dict(help="projection format: fp32 bf16 fp16")),
    ("--impl", "impl", dict(default="memfit", choices=list(IMPLS),
                            help="memfit's own optimizers, or the authors' reference storage")),
    ("--batch", "batch", dict(type=int, help="micro-batch size (default 1)")),
    ("--seq", "seq", dict(type=int, help="sequence length, the packed length (default 512)")),
    ("--checkpointing", "checkpointing", dict(choices=list(CHECKPOINTING))),
    ("--attention", "attention", dict(choices=list(ATTENTIONS))),
    ("--lora-targets", "lora_targets", dict(help="module names (q_proj,v_proj), all-linear, and for "
                                                 "lora/qlora embed_tokens, lm_head; default: peft's "
                                                 "for the architecture")),
    ("--lora-dropout", "lora_dropout", dict(type=float)),
    ("--adapter-dtype", "adapter_dtype", dict(help="fp32 (peft's default), bf16 or fp16")),
    ("--modules-to-save", "modules_to_save", dict(help="fully trained modules, e.g. embed_tokens,lm_head")),
    ("--base-quant", "base_quant", dict(choices=list(BASE_QUANTS), help="an adapter method's frozen base")),
    ("--double-quant", "double_quant", dict(type=_on_off, metavar="on|off", help="NF4 double quantisation (default on)")),
    ("--kbit-upcast", "kbit_upcast", dict(type=_on_off, metavar="on|off",
                                          help="prepare_model_for_kbit_training's fp32 upcast")),
    ("--rslora", "rslora", dict(action="store_true", help="rsLoRA scaling (no memory effect)")),
    ("--lora-init", "lora_init", dict(default="default", choices=list(LORA_INITS),
                                      help="peft's init_lora_weights (no memory effect)")),
    ("--rank-reduction", "rank_reduction", dict(type=float, help="welore: fraction of each target's "
                                                "ranks pruned (default 0.5, the reference's --model_rank 50)")),
    ("--loss", "loss", dict(choices=list(LOSSES), help="full (transformers), chunked (torchtune, LitGPT) "
                                                       "or fused (Liger, Unsloth)")),
    ("--loss-impl", "loss_impl", dict(choices=list(LOSS_IMPLS), help="the code the loss models "
                                                                    "(default: hf, torchtune, liger per kind)")),
    ("--loss-chunks", "loss_chunks", dict(type=int, help="torchtune's num_output_chunks (default 8)")),
    ("--loss-chunk-size", "loss_chunk_size", dict(type=int, help="rows per chunk of LitGPT's loss (default 128)")),
    ("--grad-accum", "grad_accum", dict(type=int, help="gradient accumulation steps (default 1)")),
    ("--paged", "paged", dict(action="store_true", default=None, help="bitsandbytes paged optimizer states")),
    ("--activation-offload", "activation_offload", dict(action="store_true", default=None,
                                                        help="activation offloading to CPU (torchtune style)")),
    ("--per-param-optimizer", "per_param_optimizer", dict(action="store_true", default=None,
                                                          help="one optimizer per parameter (torchtune's "
                                                               "optimizer_in_bwd; with --layerwise)")),
    ("--stack", "stack", dict(help="hf, torchtune, litgpt, axolotl, llamafactory or unsloth defaults")),
    ("--devices", "devices", dict(type=int, default=1)),
    ("--sharding", "sharding", dict(default="none", choices=list(SHARDINGS))),
    ("--shard-group", "shard_group", dict(type=int)),
    ("--offload", "offload", dict(default="none", choices=list(OFFLOADS))),
    ("--capacity-factor", "capacity_factor", dict(type=float, help="MoE expert capacity factor "
                                                                   "(default: balanced routing)")),
    ("--alloc-conf", "alloc_conf", dict(help="PYTORCH_CUDA_ALLOC_CONF the run uses, e.g. expandable_segments:True")),
]


def _add_spec_flags(p: argparse.ArgumentParser, method: bool = True) -> None:
    p.add_argument("--model", default="llama-7b", help="catalog name or Hub id (see `models`), or use --config")
    p.add_argument("--config", help="path of a Hugging Face config.json (parsed offline)")
    if method:
        p.add_argument("--method", default="adamw", help="method id (see `methods`)")
    for flag, dest, options in SPEC_FLAGS:
        p.add_argument(flag, dest=dest, **options)
    _add_output_flags(p)


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="table", choices=["table", "json", "csv"])
    p.add_argument("--output", help="write to this file instead of standard output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m planner", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_spec_flags(sub.add_parser("estimate", help="memory of one configuration"))
    cmp = sub.add_parser("compare", help="every method for one model (optionally on a GPU)")
    _add_spec_flags(cmp, method=False)
    cmp.add_argument("--methods", help="comma-separated method ids (default: all)")
    cmp.add_argument("--all-precisions", action="store_true", help="each method in fp32, bf16, mixed")
    fit = sub.add_parser("fit", help="per method: fits or not, headroom, largest batch/seq/rank, what would fit")
    _add_spec_flags(fit, method=False)
    fit.add_argument("--methods", help="comma-separated method ids (default: all)")
    ask = sub.add_parser("ask", help='a plain question: "will llama-7b fit on my 4090?"')
    ask.add_argument("question", nargs="+")
    _add_output_flags(ask)
    for name in ("models", "gpus", "methods"):
        _add_output_flags(sub.add_parser(name, help=f"list the {name} memfit knows"))
    from .recipe_cli import add_recipe_parser
    add_recipe_parser(sub)
    return parser


def spec_from_args(args: argparse.Namespace, method: str | None = None) -> TrainingSpec:
    return TrainingSpec(model=args.config or args.model, method=method or getattr(args, "method", "adamw"),
                        **{dest: getattr(args, dest) for _, dest, _ in SPEC_FLAGS})


def _estimate(args) -> str:
    from .estimate import estimate
    b = estimate(spec_from_args(args))
    if args.format == "json":
        return render([], "json", payload=b.to_record())
    if args.format == "csv":
        return render([b.to_row()], "csv")
    head = [f"{b.model} ({b.n_params:,} parameters), {b.spec.method}"
            + (f" on {b.gpu.name} ({human_bytes(b.gpu.capacity_bytes)})" if b.gpu else "")]
    if b.parallel is not None:
        engine = ", ".join(f"{k} {human_bytes(v)}" for k, v in b.engine_at_peak.items()) or "nothing"
        host = ", ".join(f"{k.replace('_', ' ')} {human_bytes(v)}" for k, v in b.parallel.host.items())
        head.append(f"per GPU: {b.spec.devices} device(s) under {b.parallel.plan.engine.name}; the engine holds "
                    f"{engine} at the peak" + (f"; pinned host memory {human_bytes(b.host_bytes)} ({host})"
                                               if b.host_bytes else ""))
    comps = [{"component": k, "bytes": v, "size": human_bytes(v)} for k, v in b.components.as_dict().items()]
    comps.append({"component": "peak", "bytes": b.peak_bytes, "size": human_bytes(b.peak_bytes)})
    verdict = [] if b.gpu is None else [("fits" if b.fits else "does NOT fit")
                                        + f": headroom {human_bytes(b.headroom_bytes)}"]
    if b.device:
        d = b.device
        paged = (f", bitsandbytes paged states {human_bytes(d.paged)} (unified memory, outside the "
                 "allocator)") if d.paged else ""
        verdict.append(f"device: allocated {human_bytes(d.allocated)}, reserved {human_bytes(d.reserved)} "
                       f"(needs {human_bytes(d.required)} when memory is short), CUDA context "
                       f"{human_bytes(d.context)}{paged}; nvidia-smi on a device with room: {human_bytes(d.total)}")
    if b.host_bytes:
        verdict.append(f"pinned host memory of offloaded activations: {human_bytes(b.host_bytes)}")
    verdict.append(f"tokens per optimizer step: {b.tokens_per_step:,}")
    verdict.append("phases: " + ", ".join(f"{k} {human_bytes(v)}" + (" (peak)" if k == b.peak_phase else "")
                                          for k, v in b.phases.items()))
    verdict.append(f"overhead: {b.overhead.source}")
    rows = [{**r, **{k: human_bytes(v) for k, v in r.items() if k in COMPONENTS or k == "total"}}
            for r in b.rows_table()]
    return "\n".join(head + ["assumes: " + "; ".join(b.assumptions), "", render(comps, "table"), *verdict,
                             "", render(rows, "table")])


def _compare(args) -> str:
    from .comparison import compare_records
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    records = compare_records(spec_from_args(args), methods,
                              list(PRECISIONS) if args.all_precisions else None)
    if args.format != "table":
        return render(records, args.format, payload=records)
    cols = ["method", "precision", "rank", *(COMPONENT_COLUMNS[c] for c in COMPONENTS), "peak_bytes", "fits",
            "headroom_bytes"]
    shown = [{**r, "rank": r["rank"] or "-",
              **{c: human_bytes(r[c]) for c in cols[3:] if c not in ("fits",) and r.get(c) is not None}}
             if not r["error"] else {"method": r["method"], "precision": r["precision"], "rank": r["error"]}
             for r in records]
    return render(shown, "table", cols)


def _fit_rows(records: list[dict]) -> list[dict]:
    return [{"method": r["method"], "fits": r["fits"], "peak": human_bytes(r["peak_bytes"]),
             "headroom": human_bytes(r["headroom_bytes"]), "max_batch": r["max_batch"], "max_seq": r["max_seq"],
             "max_rank": r["max_rank"] if r["max_rank"] is not None else "-", "min_gpus": devices_text(r),
             "to fit": "; ".join(s["description"] for s in r["suggestions"][:1])} for r in records]


def _per_device_head(records: list[dict]) -> list[str]:
    """The line saying every figure is one device's, when the records are for several."""
    ok = [r for r in records if not r.get("error")]
    if not ok or ok[0].get("devices", 1) == 1 and ok[0].get("sharding", "none") == "none":
        return []
    kinds = sorted({r["sharding"] for r in ok})
    return [f"per device: {ok[0]['devices']} GPU(s) under {', '.join(kinds)}; every figure below is one GPU's"]


def _fit_table(records: list[dict]) -> str:
    ok = [r for r in records if not r["error"]]
    cannot = [f"{r['method']}: {r['error']}" for r in records if r["error"]]
    notes = sorted({f"{r['method']}: {r['min_devices_note']}" for r in ok if r.get("min_devices_note")})
    head = "".join(f"{line}\n" for line in _per_device_head(records))
    return head + render(_fit_rows(ok), "table") + "".join(f"\n{line}" for line in cannot + notes)


def _fit(args) -> str:
    from .fit import fit_records
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    records = fit_records(spec_from_args(args), methods)
    if args.format == "json":
        return render([], "json", payload=records)
    if args.format == "table":
        return _fit_table(records)
    return render([{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in records], "csv")


def _ask(args) -> str:
    from .ask import ask
    answer = ask(" ".join(args.question))
    if args.format == "json":
        return render([], "json", payload=answer)
    if args.format == "csv":
        return render([{k: v for k, v in r.items() if not isinstance(v, (dict, list))}
                       for r in answer["results"]], "csv")
    head = [f"{answer['model']} on {answer['gpu']}: recommended {answer['recommended'] or 'nothing fits'}"]
    if answer.get("how_many"):
        named = answer.get("named_method")
        counts = answer["min_devices"]
        shown = [m for m in ([named] if named else []) + [m for m in counts if m != named] if counts.get(m)]
        head.append("fewest GPUs: " + (", ".join(f"{m} {devices_text(next(r for r in answer['results'] if r['method'] == m))}"
                                                  for m in shown) or "no method fits on any number of them"))
    head += ["assumes: " + "; ".join(answer["assumptions"]), ""]
    return "\n".join(head) + _fit_table(answer["results"])


def _listing(args) -> str:
    from .gpus import GPU_CATALOG
    from .methods import METHODS
    from .models import get_model, model_names
    if args.command == "models":
        rows = [{"model": n, "params": (m := get_model(n)).n_params, "layers": m.num_layers,
                 "hidden": m.hidden_size, "vocab": m.vocab_size, "type": m.model_type} for n in model_names()]
    elif args.command == "gpus":
        rows = [{"gpu": g.name, "memory_mib": g.memory_mib, "vendor": g.vendor, "arch": g.arch,
                 "bf16": g.bf16, "fp8": g.fp8} for g in GPU_CATALOG.values()]
    else:
        rows = [{"method": m.id, "name": m.name, "kind": m.kind, "options": " ".join(m.options),
                 "paper": m.paper_url} for m in METHODS.values()]
    return render(rows, args.format)


#: exit status when standard output is closed under us (`... | head -1`): what a Unix tool
#: killed by SIGPIPE reports (128 + 13), without a traceback
EXIT_PIPE = 141


def check_output(path: str) -> None:
    """ValueError unless `path` can be written as a file, checked before any work is done (so a
    long profiler run is never lost to a mistyped --output)."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise ValueError(f"--output {path!r} is a directory: name a file in it")
    if not folder.is_dir():
        raise ValueError(f"--output {path!r}: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ValueError(f"--output {path!r} is not writable here")


def _emit(text: str, output: str | None) -> None:
    text = text if text.endswith("\n") else text + "\n"
    if output:
        try:
            with open(output, "w") as fh:
                fh.write(text)
        except OSError as err:        # the disk filled, the folder went away since the check
            raise ValueError(f"cannot write --output {output!r}: {err.strerror or err}") from None
    else:
        sys.stdout.write(text)
        sys.stdout.flush()            # a closed pipe shows here, not in the interpreter's exit


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run_command(handler, args: argparse.Namespace) -> int:
    """Run a subcommand: its text to --output or stdout. A ValueError — a bad flag value, an
    --output that cannot be written — is a one-line error, exit 2; a closed pipe ends quietly
    (EXIT_PIPE); Ctrl-C says "cancelled", exit 130. Never a traceback."""
    output = getattr(args, "output", None)
    try:
        if output:
            check_output(output)
        _emit(handler(args), output)
    except ValueError as err:
        partial = getattr(err, "text", None)    # what could be computed is still shown
        if partial:
            _emit(partial, output)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE
    except KeyboardInterrupt:
        print("\ncancelled", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .recipe_cli import recipe_command
    handler = {"estimate": _estimate, "compare": _compare, "fit": _fit, "ask": _ask,
               "recipe": recipe_command}.get(args.command, _listing)
    return run_command(handler, args)
