import math

import pytest
import torch
from torch import nn

from tinycnn import build, get_phase
from tinycnn.optim import Optimization, lr_factor, param_groups
from tinycnn.stepper import SAM, bn_frozen
from tinycnn.recipe import Recipe


def test_no_bias_decay_groups():
    model = build(get_phase("mnist", "final"))
    decay, no_decay = param_groups(model, 5e-4, no_bias_decay=True)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    bn_and_bias = {id(p) for n, p in model.named_parameters() if n.endswith("bias") or p.ndim == 1}
    assert {id(p) for p in no_decay["params"]} == bn_and_bias
    assert all(p.ndim == 4 or p.ndim == 2 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert len(param_groups(model, 5e-4, no_bias_decay=False)) == 1


def test_onecycle_matches_torch():
    r = Recipe(schedule="onecycle", lr=0.4, onecycle_pct=0.3)
    total = 100
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.4, total_steps=total, pct_start=0.3,
                                              anneal_strategy="linear", cycle_momentum=False,
                                              div_factor=25.0, final_div_factor=1e4)
    for step in range(total):
        assert math.isclose(0.4 * lr_factor(step, total, 10, r), opt.param_groups[0]["lr"], rel_tol=1e-9, abs_tol=1e-12)
        opt.step()
        ref.step()


def test_cosine_with_warmup_known_values():
    r = Recipe(schedule="cosine", warmup_epochs=1, min_lr_ratio=0.0)
    # 10 steps per epoch, 110 steps: 10 warmup steps, then 100 cosine steps
    assert lr_factor(0, 110, 10, r) == pytest.approx(0.1)
    assert lr_factor(9, 110, 10, r) == pytest.approx(1.0)
    assert lr_factor(10, 110, 10, r) == pytest.approx(1.0)
    assert lr_factor(60, 110, 10, r) == pytest.approx(0.5)
    assert lr_factor(110, 110, 10, r) == pytest.approx(0.0, abs=1e-12)


def test_step_decay_known_values():
    r = Recipe(schedule="step", step_milestones=(0.5, 0.75), step_gamma=0.1)
    assert [lr_factor(s, 100, 10, r) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_triangular_clr_known_values():
    r = Recipe(schedule="clr", clr_half_epochs=1, min_lr_ratio=0.1)
    f = [lr_factor(s, 100, 10, r) for s in (0, 5, 10, 15, 20, 30)]
    assert f == pytest.approx([0.1, 0.55, 1.0, 0.55, 0.1, 1.0])
    r2 = Recipe(schedule="clr", clr_half_epochs=1, min_lr_ratio=0.0, clr_mode="triangular2")
    assert [lr_factor(s, 100, 10, r2) for s in (10, 30, 50)] == pytest.approx([1.0, 0.5, 0.25])


def test_linear_lr_scaling():
    assert Recipe(lr=0.1, batch_size=512, lr_scale_batch=128).effective_lr == pytest.approx(0.4)


@pytest.mark.parametrize("name", ["sgd", "adamw", "radam"])
def test_optimizers_build_and_step(name):
    model = build(get_phase("mnist", "final"))
    r = Recipe(optimizer=name, lookahead=(name == "radam"), lr=0.01)
    optim = Optimization(model, r.optimizer_config(), r.schedule_config(), 100, 10)
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    optim.optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    optim.load_state_dict(optim.state_dict())  # checkpointable, Lookahead included


def test_lookahead_matches_torch_optimizer_and_resumes():
    """Our post-step Lookahead does torch-optimizer's arithmetic exactly, and survives a
    state_dict round trip mid-cycle (torch-optimizer's own cannot state_dict under torch 2.14)."""
    import torch_optimizer
    from tinycnn.optim import Lookahead

    def run(make, steps, resume_at=None):
        torch.manual_seed(0)
        w = nn.Parameter(torch.randn(6))
        opt, saved = make([w]), None
        for i in range(steps):
            if i == resume_at:
                saved = opt[1].state_dict() if isinstance(opt, tuple) else None
            o = opt[0] if isinstance(opt, tuple) else opt
            o.zero_grad()
            (w ** 2 * torch.arange(6.0)).sum().backward()
            o.step()
        return w.detach().clone(), saved

    theirs, _ = run(lambda ps: torch_optimizer.Lookahead(torch.optim.SGD(ps, lr=0.1, momentum=0.9), k=5, alpha=0.5), 13)

    def ours(ps):
        base = torch.optim.SGD(ps, lr=0.1, momentum=0.9)
        return base, Lookahead(base, k=5, alpha=0.5)

    mine, _ = run(ours, 13)
    assert torch.equal(mine, theirs)
    la = Lookahead(torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1))
    la.load_state_dict({"counter": 3, "slow": [torch.ones(2)]})
    assert la.state_dict()["counter"] == 3 and torch.equal(la.state_dict()["slow"][0], torch.ones(2))


def test_sam_ascends_by_rho_then_restores_exactly():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sam = SAM(opt, rho=0.05)
    model(torch.randn(8, 5)).pow(2).mean().backward()
    original = [p.detach().clone() for p in model.parameters()]
    sam.ascend()
    moved = torch.cat([(p - o).flatten() for p, o in zip(model.parameters(), original)])
    assert moved.norm().item() == pytest.approx(0.05, rel=1e-5)
    sam.descend()
    assert all(torch.equal(p, o) for p, o in zip(model.parameters(), original))


def test_sam_step_uses_gradient_at_perturbed_point():
    # loss = 0.5 * a * w^2 (1-D): g(w) = a w. SAM: w' = w + rho*sign(g); step uses g(w') = a w'.
    a, w0, rho, lr = 3.0, 2.0, 0.1, 0.01
    w = nn.Parameter(torch.tensor([w0]))
    opt = torch.optim.SGD([w], lr=lr)
    sam = SAM(opt, rho=rho)
    (0.5 * a * w**2).sum().backward()
    sam.ascend()
    opt.zero_grad()
    (0.5 * a * w**2).sum().backward()
    sam.descend()
    opt.step()
    assert w.item() == pytest.approx(w0 - lr * a * (w0 + rho))


def test_bn_frozen_keeps_running_stats():
    bn = nn.BatchNorm2d(3)
    bn(torch.randn(4, 3, 5, 5))
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    with bn_frozen(bn):
        out = bn(torch.randn(4, 3, 5, 5) * 10 + 3)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert out.mean().abs() < 0.1  # still normalised with the batch's own statistics
    assert bn.momentum == 0.1


@pytest.mark.parametrize("variant,expected_grad", [("perturbed", lambda a, w, r: a * (w + r)),
                                                    ("sum", lambda a, w, r: a * w + a * (w + r))])
def test_sam_stepper_update_uses_the_declared_gradient(variant, expected_grad):
    """Textbook SAM steps with g(w + e) alone; round 1's engine (kept as sam_gradient="sum"
    for its committed runs) added g(w) to it, because it never cleared the first gradient."""
    from tinycnn.stepper import StepConfig, make_stepper

    a, w0, rho, lr = 3.0, 2.0, 0.1, 0.01
    model = nn.Module()
    model.w = nn.Parameter(torch.tensor([w0]))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    stepper = make_stepper(model, model, opt, StepConfig(sam_rho=rho, sam_gradient=variant), torch.device("cpu"))

    def objective(forward, x, targets):
        return (0.5 * a * model.w ** 2).sum(), torch.zeros(1, 2)

    stepper.step(objective, None, None)
    assert model.w.item() == pytest.approx(w0 - lr * expected_grad(a, w0, rho))


def test_ema_warmup_follows_timm_decay_schedule():
    """With warm-up, an update after n earlier ones uses decay min(d, (1 + n) / (10 + n)) (the
    first update copies the weights, as AveragedModel does): early weights fade quickly
    instead of lingering for ~1/(1 - d) steps."""
    from tinycnn.averaging import EMA

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    fast, slow = EMA(model, 0.999, warmup=True), EMA(model, 0.999)
    ref = None
    for n in range(6):  # n: updates averaged so far
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        fast.on_step(model)
        slow.on_step(model)
        d = min(0.999, (1 + n) / (10 + n))
        now = [p.detach().clone() for p in model.parameters()]
        ref = now if ref is None else [r * d + c * (1 - d) for r, c in zip(ref, now)]
    got = [p.detach() for p in fast.averaged.module.parameters()]
    assert all(torch.allclose(g, r, atol=1e-6) for g, r in zip(got, ref))
    moved_fast = sum((g - r0).abs().sum() for g, r0 in zip(got, slow.averaged.module.parameters()))
    assert moved_fast > 0.5  # the warmed-up average has moved far from the plain one
