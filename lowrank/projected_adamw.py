"""One projected-Adam skeleton; methods plug in a *basis rule* and an *update (residual) rule*.

For a selected 2-D parameter ``W (m, n)`` with gradient ``G``, step ``t`` (before increment ``k``)::

    if basis.is_due(k):  basis.refresh(G)              # every update_proj_gap steps, and at k = 0
    P = basis.matrices() ; R = project(G, P)           # lowrank.projection
    m, v <- Adam moments of R                          # lowrank.adam; optionally 8-bit (lowrank.quant8)
    N = m / denom ; s = adam_step_size(t)
    decay (torch style, before)
    W <- W - s · update_rule(G, R, N, P)               # 'none': α · project_back(N)   (GaLore)
                                                       # (op order as the reference code: bit-identical)
    decay (hf style, after)                            # 'fira', 'apollo': lowrank.fira / lowrank.apollo

A 3-D parameter ``(E, m, n)`` (transformers 5's fused MoE experts) is a batch of E matrices:
each gets its own basis, low-rank moments and (Fira, APOLLO) limiter, computed batched (a GaLore
refresh takes the E SVDs one after another); the result equals a loop over the experts.
Parameters that are 1-D, or sit in a group without ``rank``, get plain AdamW (same
``adam_style``) in the same optimizer. Which parameters are "selected" is decided by the param
groups (:func:`lowrank.groups.projection_param_groups` builds the authors' groups).

Group options (all groups): ``lr``, ``betas``, ``eps``, ``weight_decay``, ``correct_bias``,
``adam_style`` (``'hf'`` default, ``'torch'``; see :mod:`lowrank.adam`), ``optim_bits`` (32, or 8
for block-wise 8-bit moments), ``state_dtype`` (moments' dtype, default the parameter's),
``proj_dtype`` (projection's dtype, default the gradient's).
Projected groups (those with ``rank``): ``rank``, ``update_proj_gap`` (200), the scale (key
:attr:`ProjectedAdamW.scale_key`: ``scale``, Fira ``alpha``; default 1.0), ``proj_type``
(``'std'``), ``basis`` and ``residual`` (rule names, defaults from the class).

State is plain tensors only (``docs/storage-contract.md``), so ``state_dict()`` round-trips and a
resumed run continues bit-identically. Regenerable tensors shared by many parameters (the DCT
bases) live in ``optimizer.shared_buffers`` and are not saved.

Extending (Q-GaLore, GradNormLoRP...): subclass :class:`BasisRule` / :class:`UpdateRule`, register
with :func:`register_basis` / :func:`register_update`, and bind the names in a subclass::

    class MyAdamW(ProjectedAdamW):
        basis_rule, residual_rule = "my-basis", "none"
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .adam import (adam_denoms, adam_directions, adam_moments_, adam_step_size, adamw_step_, check_adam_group,
                   decay_after_, decay_before_)
from .projection import (check_positive, check_positive_int, check_proj_type, check_rank, project,
                         project_back, projection_side, svd_basis)
from .quant8 import init_moments, read_moments, write_moments_
from .sizes import storage_bytes
from .sharded import full_gradient, local, own_rows, row_shard
from .sharded import broadcast_ as broadcast_basis_
from .sharded import project as project_rows

__all__ = [
    "ProjectedGrad",
    "BasisRule",
    "UpdateRule",
    "BASIS_RULES",
    "UPDATE_RULES",
    "register_basis",
    "register_update",
    "ProjectedAdamW",
    "optimizer_state_bytes",
    "FOREACH_BUCKET_NUMEL",
]

FOREACH_BUCKET_NUMEL = 1 << 22  # max elements per foreach batch: bounds step transients to ~16 MB fp32
_MATRIX_DIMS = (2, 3)           # a matrix, or a batch of them (fused experts (E, m, n))


@dataclass
class ProjectedGrad:
    """One selected parameter during a step: transient, never stored.

    ``proj`` is what :meth:`BasisRule.matrices` returned, ``low`` the low-rank gradient ``R``,
    ``step`` the step count after increment (set before the update rule runs). For a row-sharded
    (FSDP2) parameter ``param`` and ``grad`` are this rank's rows and ``shard`` says where they
    sit (:mod:`lowrank.sharded`); otherwise ``shard`` is None.
    """

    param: torch.Tensor
    grad: torch.Tensor
    state: dict
    group: dict
    side: str
    proj: object
    low: torch.Tensor
    step: int = 0
    shard: object = None


class BasisRule:
    """How a selected parameter's basis is made, stored in its state and used. Stateless.

    Subclasses implement :meth:`refresh` (write the basis into ``state`` as plain tensors, or into
    ``opt.shared_buffers``; may return ``R`` when it comes for free) and :meth:`matrices` (the
    projection for :func:`lowrank.projection.project`: a tensor, or a ``(left, right)`` pair for
    side ``'full'``). ``sides`` lists the supported sides.
    """

    name = "base"
    state_key = "projection"
    sides: tuple[str, ...] = ("left", "right", "full")
    shardable = False       # implements row-sharded (FSDP2) parameters, see lowrank.sharded

    def validate(self, group: dict) -> None:
        if group["proj_type"] == "full" and "full" not in self.sides:
            raise ValueError(f"basis {self.name!r} does not support proj_type 'full'")

    def is_due(self, state: dict, group: dict, step: int) -> bool:
        """Refresh at step 0, then every ``update_proj_gap`` steps (GaLore's schedule)."""
        return self.state_key not in state or step % group["update_proj_gap"] == 0

    def refresh(self, opt, param, grad, state, group, side) -> torch.Tensor | None:
        raise NotImplementedError

    def matrices(self, opt, param, state, group, grad, side):
        raise NotImplementedError


class UpdateRule:
    """How ``(G, R, N, P)`` become the full-size update ``U``; the skeleton does ``W -= s · U``.

    The base rule is GaLore's, ``U = α · project_back(N)``. ``init_state`` adds the rule's own
    state when the moments are created. ``update`` returns a new ``(m, n)`` tensor and may read
    and write ``item.state``.
    """

    name = "none"
    shardable = True        # row-separable: works on a rank's rows as they are

    def validate(self, group: dict) -> None:
        pass

    def init_state(self, state: dict, param: torch.Tensor) -> None:
        pass

    def update(self, item: ProjectedGrad, direction: torch.Tensor, scale: float) -> torch.Tensor:
        return project_back(direction, item.proj, item.side).mul_(scale)


BASIS_RULES: dict[str, BasisRule] = {}
UPDATE_RULES: dict[str, UpdateRule] = {}


def register_basis(rule: BasisRule) -> BasisRule:
    """Make ``rule`` available as group option ``basis=rule.name``."""
    BASIS_RULES[rule.name] = rule
    return rule


def register_update(rule: UpdateRule) -> UpdateRule:
    """Make ``rule`` available as group option ``residual=rule.name``."""
    UPDATE_RULES[rule.name] = rule
    return rule


class SVDBasis(BasisRule):
    """GaLore: top-r singular vectors of the gradient; ``projection`` (+ ``projection_right``)."""

    name = "svd"
    shardable = True

    def refresh(self, opt, param, grad, state, group, side):
        shard = row_shard(param)
        # sharded: the SVD needs the whole gradient (all-gathered for the refresh); rank 0's basis
        # is broadcast so that every rank holds the same one, then a left basis keeps its rows
        proj = svd_basis(full_gradient(grad), group["rank"], side, group["proj_dtype"])
        if side == "full":
            state["projection"], state["projection_right"] = proj
        else:
            state["projection"] = own_rows(broadcast_basis_(proj, shard), shard if side == "left" else None)
        return None

    def matrices(self, opt, param, state, group, grad, side):
        return (state["projection"], state["projection_right"]) if side == "full" else state["projection"]


register_basis(SVDBasis())
register_update(UpdateRule())


def _buckets(params: list, size: Callable[[torch.Tensor], int]):
    """Consecutive runs of ``params`` whose summed ``size`` stays within FOREACH_BUCKET_NUMEL."""
    bucket, total = [], 0
    for p in params:
        if bucket and total + size(p) > FOREACH_BUCKET_NUMEL:
            yield bucket
            bucket, total = [], 0
        bucket.append(p)
        total += size(p)
    if bucket:
        yield bucket


def _advance(states: list[dict], before: list[float] | None = None) -> list[float]:
    """Increment every ``step`` (0-d float32 CPU tensor, as torch.optim.AdamW); return the new values.

    ``before``: the values before the increment when the caller already read them.
    """
    steps = [s["step"] for s in states]
    if before is None:
        before = [t.item() for t in steps]
    torch._foreach_add_(steps, 1.0)
    return [k + 1.0 for k in before]


class ProjectedAdamW(torch.optim.Optimizer):
    """AdamW whose selected 2-D parameters keep their moments in a low-rank basis.

    Bind a method by subclassing and setting :attr:`basis_rule`, :attr:`residual_rule`,
    :attr:`scale_key` and :attr:`projected_defaults`; see the module docstring for the group
    options. Extra public API: :meth:`step_parameter` (one parameter, for layer-wise updates),
    :meth:`param_index`, :attr:`shared_buffers`, :func:`optimizer_state_bytes`.
    """

    basis_rule = "svd"
    residual_rule = "none"
    scale_key = "scale"
    projected_defaults: dict = {"update_proj_gap": 200, "scale": 1.0, "proj_type": "std"}
    host_state_keys = ("step", "seed")  # small host-side counters, never moved to the parameter's device

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, correct_bias: bool = True, no_deprecation_warning: bool = True,
                 *, adam_style: str = "hf", optim_bits: int = 32, state_dtype: torch.dtype | None = None,
                 proj_dtype: torch.dtype | None = None):
        self.shared_buffers: dict[str, torch.Tensor] = {}
        self._order: dict[torch.Tensor, int] = {}
        self._group_cache: dict[torch.Tensor, dict] = {}
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, correct_bias=correct_bias,
                        adam_style=adam_style, optim_bits=optim_bits, state_dtype=state_dtype, proj_dtype=proj_dtype)
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ groups and validation
    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            self._order.setdefault(p, len(self._order))
        check_adam_group(group)
        if "rank" in group:
            defaults = {**self.projected_defaults, "basis": self.basis_rule, "residual": self.residual_rule}
            for key, value in defaults.items():
                group.setdefault(key, value)
            self._check_projected_group(group)

    def _check_projected_group(self, group: dict) -> None:
        check_rank(group["rank"])
        for p in group["params"]:
            if p.ndim in _MATRIX_DIMS:
                check_rank(group["rank"], p.shape)
        check_positive_int("update_proj_gap", group["update_proj_gap"])
        check_positive(self.scale_key, group[self.scale_key])
        check_proj_type(group["proj_type"])
        for key, table in (("basis", BASIS_RULES), ("residual", UPDATE_RULES)):
            if group[key] not in table:
                raise ValueError(f"unknown {key} rule {group[key]!r}; known: {', '.join(sorted(table))}")
            table[group[key]].validate(group)

    def param_index(self, param: torch.Tensor) -> int:
        """Position of ``param`` in construction order (seeds APOLLO's random projections)."""
        return self._order[param]

    @staticmethod
    def is_projected(group: dict, param: torch.Tensor) -> bool:
        return "rank" in group and param.ndim in _MATRIX_DIMS

    def _group_of(self, param: torch.Tensor) -> dict:
        group = self._group_cache.get(param)
        if group is None or not any(group is g for g in self.param_groups):
            self._group_cache = {p: g for g in self.param_groups for p in g["params"]}
            group = self._group_cache[param]
        return group

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure=None):
        """One optimizer step over every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        """Update a group's parameters that have a gradient (methods with more state extend this)."""
        self._update(group, [p for p in group["params"] if p.grad is not None])

    @torch.no_grad()
    def step_parameter(self, param: torch.Tensor) -> None:
        """One step for ``param`` alone (no-op without a gradient); used by layer-wise updates."""
        if param.grad is not None:
            self._update(self._group_of(param), [param])

    def _update(self, group: dict, params: list) -> None:
        if "rank" in group:                                                # see is_projected
            projected = [p for p in params if p.ndim in _MATRIX_DIMS]
            plain = [p for p in params if p.ndim not in _MATRIX_DIMS]
        else:
            projected, plain = [], params
        for bucket in _buckets(plain, lambda p: p.numel()):
            self._plain_update(group, bucket)
        for bucket in _buckets(projected, lambda p: group["rank"] * math.prod(p.shape[:-2]) * max(p.shape[-2:])):
            self._projected_update(group, bucket)

    def _init_state(self, param: torch.Tensor, moment_shape, group: dict) -> dict:
        state = self.state[param]
        if "step" not in state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
        if "exp_avg" not in state:
            init_moments(state, moment_shape, local(param).device, group["state_dtype"] or param.dtype,
                         group["optim_bits"] == 8)
        return state

    def _plain_update(self, group: dict, params: list) -> None:
        # a sharded (DTensor) parameter steps its local shard: moments of the shard's shape
        states = [self._init_state(p, local(p).shape, group) for p in params]
        steps = _advance(states)
        moments = [read_moments(s) for s in states]
        adamw_step_([local(p) for p in params], [local(p.grad) for p in params], [m for m, _ in moments],
                    [v for _, v in moments], steps,
                    lr=group["lr"], betas=group["betas"], eps=group["eps"], weight_decay=group["weight_decay"],
                    style=group["adam_style"], correct_bias=group["correct_bias"])
        for s, (m, v) in zip(states, moments):
            write_moments_(s, m, v)

    def _project(self, group: dict, param: torch.Tensor, state: dict, step: float) -> ProjectedGrad:
        grad = param.grad
        side = projection_side(group["proj_type"], param.shape)      # the whole matrix's side
        basis, rule = BASIS_RULES[group["basis"]], UPDATE_RULES[group["residual"]]
        shard = row_shard(param)
        if shard is not None and not (basis.shardable and rule.shardable):
            raise ValueError(f"basis {basis.name!r} with update {rule.name!r} does not support sharded "
                             "(DTensor) parameters; GaLore, Fira and APOLLO do (lowrank.sharded)")
        low = None
        if basis.is_due(state, group, int(step)):
            low = basis.refresh(self, param, grad, state, group, side)
        proj = basis.matrices(self, param, state, group, grad, side)
        if low is None:
            low = project_rows(local(grad), proj, side, shard) if shard is not None else project(grad, proj, side)
        if "exp_avg" not in state:
            self._init_state(param, low.shape, group)
            rule.init_state(state, local(param))
        return ProjectedGrad(local(param), local(grad), state, group, side, proj, low, shard=shard)

    def _projected_update(self, group: dict, params: list) -> None:
        states = [self.state[p] for p in params]
        for state in states:
            if "step" not in state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
        before = [state["step"].item() for state in states]
        items = [self._project(group, p, state, k) for p, state, k in zip(params, states, before)]
        steps = _advance(states, before)
        moments = [read_moments(it.state) for it in items]
        (beta1, beta2), style, lr = group["betas"], group["adam_style"], group["lr"]
        adam_moments_([m for m, _ in moments], [v for _, v in moments], [it.low for it in items], beta1, beta2, style)
        denoms = adam_denoms([v for _, v in moments], steps, beta2, group["eps"], style)
        directions = adam_directions([m for m, _ in moments], denoms)
        for it, (m, v) in zip(items, moments):
            write_moments_(it.state, m, v)
        del moments, denoms
        params = [it.param for it in items]                # local shards of sharded parameters
        decay_before_(params, lr, group["weight_decay"], style)
        rule, scale = UPDATE_RULES[group["residual"]], group[self.scale_key]
        for it, direction, t in zip(items, directions, steps):
            it.step = int(t)
            if direction.dtype != it.param.dtype:                           # 8-bit: fp32 -> param dtype
                direction = direction.to(it.param.dtype)
            update = rule.update(it, direction, scale)
            it.param.add_(update, alpha=-adam_step_size(lr, beta1, beta2, t, style, group["correct_bias"]))
        decay_after_(params, lr, group["weight_decay"], style)

    # ------------------------------------------------------------------ (de)serialisation
    def load_state_dict(self, state_dict: dict) -> None:
        """As ``torch.optim.Optimizer``'s, but every state tensor keeps its saved dtype.

        torch casts floating-point state to the parameter's dtype on load; memfit's states
        (fp32 absmax and limiter scalars, ``state_dtype`` moments) must come back unchanged.
        Host-side counters (:attr:`host_state_keys`) are copied and stay on the CPU.
        """
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(saved_ids, params):
            for key, value in state_dict["state"].get(pid, {}).items():
                if torch.is_tensor(value):
                    host = key in self.host_state_keys
                    self.state[p][key] = value.clone() if host else value.to(device=p.device)
        self._group_cache = {}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("shared_buffers", {})
        self.__dict__.setdefault("_group_cache", {})
        self.__dict__.setdefault("_order", {p: i for i, p in enumerate(p for g in self.param_groups
                                                                        for p in g["params"])})


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every distinct tensor storage in ``optimizer.state`` plus ``shared_buffers``, once.

    Works for any ``torch.optim.Optimizer`` (bitsandbytes' shared quantisation maps count once).
    """
    tensors = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    tensors += [v for v in getattr(optimizer, "shared_buffers", {}).values() if torch.is_tensor(v)]
    return storage_bytes(tensors)
