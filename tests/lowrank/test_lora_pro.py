"""LoRA-Pro (lowrank.lora_pro) and the peft helpers (lowrank.lora)."""

import copy
import re

import pytest
import torch

from lowrank import lora_pro as lp
from lowrank.lora import (apply_lora, block_linear_names, lora_pairs, lora_pro_param_groups,
                          lora_target_regex, lora_targets)
from lowrank.projected_adamw import optimizer_state_bytes
from lowrank.registry import OPTIMIZERS


# ---------------------------------------------------------------- Sylvester solver


def _gram_pair(r, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(r, 3 * r + 1, generator=g)
    b = torch.randn(2 * r + 3, r, generator=g)
    return b.T @ b, a @ a.T, torch.randn(r, r, generator=g)


@pytest.mark.parametrize("r", [1, 2, 4, 8, 16])
def test_sylvester_solution_satisfies_equation(r):
    btb, aat, c = _gram_pair(r, seed=r)
    x = lp.solve_sylvester_sym(btb, aat, c)
    residual = (btb @ x + x @ aat - c).abs().max()
    assert residual < 1e-5 * max(1.0, c.abs().max().item())


def test_sylvester_matches_kronecker_solve():
    """vec(aX + Xb) = (I ⊗ a + bᵀ ⊗ I) vec(X) (column-major vec), solved densely in fp64."""
    r = 4
    btb, aat, c = _gram_pair(r, seed=11)
    eye = torch.eye(r, dtype=torch.float64)
    op = torch.kron(eye, btb.double()) + torch.kron(aat.double().T.contiguous(), eye)
    x_ref = torch.linalg.solve(op, c.double().T.reshape(-1)).reshape(r, r).T
    x = lp.solve_sylvester_sym(btb, aat, c)
    assert torch.allclose(x.double(), x_ref, rtol=1e-4, atol=1e-5)


def test_sylvester_singular_gives_min_norm_solution():
    a = torch.diag(torch.tensor([2.0, 0.0]))
    b = torch.diag(torch.tensor([1.0, 0.0]))
    c = torch.tensor([[3.0, 2.0], [1.0, 0.0]])
    x = lp.solve_sylvester_sym(a, b, c)
    assert torch.allclose(x, torch.tensor([[1.0, 1.0], [1.0, 0.0]]))


# ---------------------------------------------------------------- closed form vs brute force


def _lora_operator(a, b, s):
    """Dense matrix of (gA, gB) -> s (B gA + gB A) acting on cat(vec gA, vec gB), fp64."""
    (r, n), m = a.shape, b.shape[0]
    a64, b64 = a.double(), b.double()
    cols = []
    for i in range(r * n):
        e = torch.zeros(r * n, dtype=torch.float64)
        e[i] = 1
        cols.append((s * b64 @ e.view(r, n)).reshape(-1))
    for i in range(m * r):
        e = torch.zeros(m * r, dtype=torch.float64)
        e[i] = 1
        cols.append((s * e.view(m, r) @ a64).reshape(-1))
    return torch.stack(cols, 1)


def _project_onto_columns(op: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection of y onto op's column space, fp64. The LoRA operator has an exact
    r²-dimensional null space (gA = X A, gB = -B X move nothing), whose singular values are
    rounding noise (~1e-16 relative) while the others are O(1): a 1e-10 relative cut separates
    them on any machine. (`torch.linalg.lstsq`'s default rank decision did not: its result varied
    with memory alignment under the CPU's LAPACK, failing this test about 1 run in 10.)"""
    u, sv, _ = torch.linalg.svd(op, full_matrices=False)
    keep = u[:, sv > 1e-10 * sv.max()]
    return keep @ (keep.T @ y)


def test_closed_form_is_the_least_squares_optimum_r2():
    torch.manual_seed(0)
    m, n, r, s = 9, 6, 2, 1.5
    a, b, g = torch.randn(r, n), torch.randn(m, r), torch.randn(m, n)
    aat_inv, btb_inv = lp.gram_inverses(a, b)
    ga, gb = lp.lora_pro_adjust(a, b, g, s, aat_inv, btb_inv, first=False)
    ours = lp.equivalent_gradient(a, b, ga, gb, s, torch.float64)

    op = _lora_operator(a, b, s)
    best = _project_onto_columns(op, g.double().reshape(-1))
    assert torch.allclose(ours.reshape(-1), best, atol=1e-5)          # same image, same residual
    # no other step of the same form gets closer
    for _ in range(20):
        da, db = ga + 0.1 * torch.randn_like(ga), gb + 0.1 * torch.randn_like(gb)
        other = lp.equivalent_gradient(a, b, da, db, s, torch.float64)
        assert (other - g.double()).norm() >= (ours - g.double()).norm() - 1e-9


def test_sylvester_term_picks_the_solution_nearest_plain_lora_r2():
    """Among minimisers (gA + X A, gB - B X), X minimises the distance to (s Bᵀ g, s g Aᵀ)."""
    torch.manual_seed(1)
    m, n, r, s = 8, 5, 2, 2.0
    a, b, g = torch.randn(r, n), torch.randn(m, r), torch.randn(m, n)
    aat_inv, btb_inv = lp.gram_inverses(a, b)
    plain_a, plain_b = s * b.T @ g, s * g @ a.T
    ga0, gb0 = lp.lora_pro_project(a, b, plain_a, plain_b, s, aat_inv, btb_inv, first=False)
    ga, gb = lp.lora_pro_adjust(a, b, g, s, aat_inv, btb_inv, first=False)

    cols = []                                                          # X -> (X A, -B X)
    for i in range(r * r):
        e = torch.zeros(r * r)
        e[i] = 1
        x = e.view(r, r)
        cols.append(torch.cat([(x @ a).reshape(-1), (-b @ x).reshape(-1)]))
    op = torch.stack(cols, 1).double()
    rhs = torch.cat([(plain_a - ga0).reshape(-1), (plain_b - gb0).reshape(-1)]).double()
    x_bf = torch.linalg.lstsq(op, rhs).solution.view(r, r)
    assert torch.allclose(ga.double(), ga0.double() + x_bf @ a.double(), atol=1e-4)
    assert torch.allclose(gb.double(), gb0.double() - b.double() @ x_bf, atol=1e-4)


def test_equivalent_gradient_is_reachable_part_of_gradient():
    """s (B gA + gB A) with the X = 0 projection equals P_B G + (I - P_B) G P_A (s cancels)."""
    torch.manual_seed(2)
    m, n, r, s = 10, 7, 3, 3.0
    a, b, big_g = torch.randn(r, n), torch.randn(m, r), torch.randn(m, n)
    aat_inv, btb_inv = lp.gram_inverses(a, b)
    ga, gb = lp.lora_pro_project(a, b, s * b.T @ big_g, s * big_g @ a.T, s, aat_inv, btb_inv, False)
    p_b = b @ torch.linalg.pinv(b)
    p_a = torch.linalg.pinv(a) @ a
    want = p_b @ big_g + (torch.eye(m) - p_b) @ big_g @ p_a
    assert torch.allclose(lp.equivalent_gradient(a, b, ga, gb, s, torch.float32), want, atol=1e-4)


# ---------------------------------------------------------------- peft helpers


def _tiny(kind):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    if kind == "llama":
        cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=2, vocab_size=50)
        return LlamaForCausalLM(cfg)
    if kind == "gpt2":
        cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=16,
                         bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(cfg)
    cfg = RobertaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                        intermediate_size=64, vocab_size=50, max_position_embeddings=40)
    return RobertaForSequenceClassification(cfg)


@pytest.mark.parametrize(
    "kind, adapted",
    [
        ("llama", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
        ("gpt2", {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}),
        ("roberta", {"self.query", "self.key", "self.value", "attention.output.dense",
                     "intermediate.dense", "layer.0.output.dense"}),
    ],
)
def test_apply_lora_targets_block_linears_only(kind, adapted):
    tiny = _tiny(kind)
    model = apply_lora(tiny, rank=4, alpha=8, targets=block_linear_names(tiny))
    names = [n for n, *_ in lora_pairs(model)]
    assert len(names) == len(adapted)
    assert all(any(n.endswith(a) for n in names) for a in adapted)
    assert not any("classifier" in n or "lm_head" in n for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_lora_pairs_shapes_and_scaling():
    model = apply_lora(_tiny("llama"), rank=4, alpha=8)
    for _, a, b, s in lora_pairs(model):
        assert a.shape[0] == 4 and b.shape[1] == 4 and s == 2.0
    rs = apply_lora(_tiny("llama"), rank=4, alpha=8, use_rslora=True)
    assert {s for *_, s in lora_pairs(rs)} == {4.0}                  # alpha / sqrt(r)


def test_lora_pro_param_groups_alternate_a_b():
    model = apply_lora(_tiny("llama"), rank=4, alpha=8)
    (group,) = lora_pro_param_groups(model, lr=1e-3)
    assert group["scaling"] == 2.0 and group["lr"] == 1e-3
    shapes = [tuple(p.shape) for p in group["params"]]
    assert all(a[0] == 4 and b[1] == 4 for a, b in zip(shapes[::2], shapes[1::2]))


def test_lora_helper_errors():
    with pytest.raises(ValueError, match="mystery"):
        lora_targets("mystery")
    assert lora_targets("llama") == ("q_proj", "v_proj")          # peft's own default
    with pytest.raises(ValueError, match="0"):
        apply_lora(_tiny("llama"), rank=0)
    assert re.fullmatch(lora_target_regex(["q_proj"]), "model.layers.3.self_attn.q_proj")
    assert not re.fullmatch(lora_target_regex(["q_proj"]), "model.layers.3.self_attn.q_proj_x")


# ---------------------------------------------------------------- the optimizer


def _pair(m=16, n=12, r=2, seed=0):
    torch.manual_seed(seed)
    a = torch.nn.Parameter(torch.randn(r, n) * 0.3)
    b = torch.nn.Parameter(torch.zeros(m, r))                          # peft init: B = 0
    return a, b


def _toy_loss(w0, a, b, s, x, target):
    w = w0 + s * b @ a
    return ((x @ w.T - x @ target.T) ** 2).mean()


def test_loss_falls_on_a_toy_problem():
    a, b = _pair()
    torch.manual_seed(1)
    w0, target, x = torch.randn(16, 12), torch.randn(16, 12), torch.randn(64, 12)
    opt = lp.LoRAProAdamW([{"params": [a, b], "scaling": 2.0}], lr=0.05)
    losses = []
    for _ in range(60):
        loss = _toy_loss(w0, a, b, 2.0, x, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    assert set(opt.state) == {a}                                       # lora_B holds nothing


def test_step_moves_w_closest_to_the_full_rank_adam_step():
    """After the first step (B != 0), s(B'A' - BA) is the best rank-r-reachable approximation of the
    full-rank Adam step -lr/bc1 · m/denom (up to the O(lr²) product term s·ΔB·ΔA)."""
    a, b = _pair(m=9, n=6, r=2)
    torch.manual_seed(2)
    w0, target, x = torch.randn(9, 6), torch.randn(9, 6), torch.randn(32, 6)
    s, lr = 1.5, 1e-4
    opt = lp.LoRAProAdamW([{"params": [a, b], "scaling": s}], lr=0.05)
    for step in range(3):
        if step == 2:                                                  # a tiny step to compare at first order
            opt.param_groups[0]["lr"] = lr
            a0, b0 = a.detach().clone(), b.detach().clone()
        opt.zero_grad()
        _toy_loss(w0, a, b, s, x, target).backward()
        opt.step()
    st = opt.state[a]
    beta1, beta2 = opt.param_groups[0]["betas"]
    t = st["step"].item()
    full_step = -(lr / (1 - beta1**t)) * st["exp_avg"] / (st["exp_avg_sq"].sqrt() / (1 - beta2**t) ** 0.5 + 1e-8)
    moved = s * (b.detach() @ a.detach() - b0 @ a0)
    op = _lora_operator(a0, b0, s)
    best = _project_onto_columns(op, full_step.double().reshape(-1)).view(9, 6)
    assert (moved.double() - best).norm() < 1e-3 * best.norm()
    assert (moved.double() - full_step.double()).norm() <= (best - full_step.double()).norm() * (1 + 1e-3)


def test_scaling_comes_from_the_group():
    """The same pair under scalings 2 and 4: the first step's gB = (1/s²) (s g Aᵀ) (AAᵀ)⁻¹ halves."""
    moves = []
    for s in (2.0, 4.0):
        a, b = _pair()
        torch.manual_seed(3)
        g = torch.randn(16, 12)
        opt = lp.LoRAProAdamW([{"params": [a, b], "scaling": s}], lr=1e-3)
        a.grad, b.grad = s * b.detach().T @ g, s * g @ a.detach().T
        opt.step()
        moves.append(b.detach().clone())
    assert torch.allclose(moves[0], 2 * moves[1], atol=1e-7)


def test_storage_contract_bytes():
    a, b = _pair(m=40, n=24, r=4)
    a2, b2 = _pair(m=40, n=24, r=4, seed=1)
    head = torch.nn.Parameter(torch.randn(10))
    opt = lp.LoRAProAdamW([{"params": [a, b], "scaling": 2.0},
                           {"params": [a2, b2], "scaling": 2.0, "state_dtype": torch.bfloat16},
                           {"params": [head]}])
    for p in (a, b, a2, b2, head):
        p.grad = torch.randn_like(p)
    opt.step()
    pair_fp32 = 2 * 40 * 24 * 4 + 4                                    # exp_avg, exp_avg_sq (m, n) + step
    pair_bf16 = 2 * 40 * 24 * 2 + 4
    head_bytes = 2 * 10 * 4 + 4                                        # plain AdamW
    assert optimizer_state_bytes(opt) == pair_fp32 + pair_bf16 + head_bytes == 11612
    assert set(opt.state) == {a, a2, head}


def test_state_dict_round_trip_is_bit_identical():
    torch.manual_seed(4)
    w0, x = torch.randn(16, 12), torch.randn(32, 12)
    targets = [torch.randn(16, 12) for _ in range(6)]

    def run(a, b, opt, ts):
        for t in ts:
            opt.zero_grad()
            _toy_loss(w0, a, b, 2.0, x, t).backward()
            opt.step()

    def make(a, b):
        group = {"params": [a, b], "scaling": 2.0, "state_dtype": torch.bfloat16}
        return lp.LoRAProAdamW([group], lr=0.01, weight_decay=0.1)

    a, b = _pair()
    opt = make(a, b)
    run(a, b, opt, targets[:3])
    saved = (a.detach().clone(), b.detach().clone(), copy.deepcopy(opt.state_dict()))
    run(a, b, opt, targets[3:])
    a2, b2 = torch.nn.Parameter(saved[0].clone()), torch.nn.Parameter(saved[1].clone())
    opt2 = make(a2, b2)
    opt2.load_state_dict(saved[2])
    assert opt2.state[a2]["exp_avg"].dtype == torch.bfloat16
    run(a2, b2, opt2, targets[3:])
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert all(torch.equal(v, opt2.state[a2][k]) for k, v in opt.state[a].items())


def test_on_a_peft_model():
    tiny = _tiny("llama")
    model = apply_lora(tiny, rank=4, alpha=8, targets=block_linear_names(tiny))
    opt = lp.LoRAProAdamW(lora_pro_param_groups(model), lr=1e-2)
    ids = torch.randint(0, 50, (2, 8))
    losses = []
    for _ in range(5):
        out = model(input_ids=ids, labels=ids)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
    # 7 adapted linears of the tiny LLaMA: q,k,v,o (32, 32), gate,up (64, 32), down (32, 64)
    assert optimizer_state_bytes(opt) == 2 * 4 * (4 * 32 * 32 + 3 * 64 * 32) + 7 * 4


@pytest.mark.parametrize("kwargs, word", [
    ({"lr": -1.0}, "-1.0"), ({"betas": (0.9, 1.0)}, "1.0"), ({"eps": -1.0}, "-1.0"),
    ({"weight_decay": -0.5}, "-0.5"), ({"delta": -1e-3}, "-0.001"), ({"adam_style": "keras"}, "keras"),
])
def test_bad_hyperparameters_raise(kwargs, word):
    a, b = _pair()
    with pytest.raises(ValueError, match=word):
        lp.LoRAProAdamW([{"params": [a, b], "scaling": 2.0}], **kwargs)


def test_bad_groups_raise():
    a, b = _pair()
    with pytest.raises(ValueError, match="-2.0"):
        lp.LoRAProAdamW([{"params": [a, b], "scaling": -2.0}])
    with pytest.raises(ValueError, match="odd count 3"):
        lp.LoRAProAdamW([{"params": [a, b, a.detach().clone().requires_grad_()], "scaling": 2.0}])
    with pytest.raises(ValueError, match=r"\(16, 2\), \(2, 12\)"):
        lp.LoRAProAdamW([{"params": [b, a], "scaling": 2.0}])
    with pytest.raises(ValueError, match="lora_pro_param_groups"):
        lp.LoRAProAdamW([a, b])                                        # no scaling anywhere


def test_registry_entry():
    assert OPTIMIZERS["lora-pro"] is lp.LoRAProAdamW
