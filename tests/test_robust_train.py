"""Training for robustness (issue #18 item 2): noise/blur/contrast ops, AugMix with its JSD
loss, and the zero-parameter ``std`` block. Each test names what it would catch."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinycnn import build, count_macs, count_params
from tinycnn.augment import AugmentConfig, BatchAugment, Contrast, GaussBlur, GaussNoise, smooth_one_hot
from tinycnn.augmix import AUGMIX_OPS, EXCLUDED, AugMix, AugMixViews, warp
from tinycnn.blocks import PerImageStandardize
from tinycnn.errors import RecipeError, SpecError
from tinycnn.objective import ConsistencyConfig, CrossEntropy, JensenShannon, js_divergence, make_objective
from tinycnn.recipe import Recipe, apply_overrides
from tinycnn.spec import PhaseSpec, parse_block


def _batch(b=16, c=3, s=12, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, s, s, generator=gen)
    return x, smooth_one_hot(torch.randint(0, 10, (b,), generator=gen), 10, 0.0)


def _high_freq_energy(x):
    """Energy of the horizontal and vertical pixel differences, per image."""
    return (x.diff(dim=-1) ** 2).mean((1, 2, 3)) + (x.diff(dim=-2) ** 2).mean((1, 2, 3))


# --- 1. noise, blur, contrast -------------------------------------------------------------

OPS = {
    "noise": lambda p: GaussNoise(p, 0.1),
    "blur": lambda p: GaussBlur(p, 1.5),
    "contrast": lambda p: Contrast(p, 0.2, 1.0),
    "augmix": lambda p: AugMix(12),
    "augmix_views": lambda p: AugMixViews(AugMix(12, depth=2), 2),
}


@pytest.mark.parametrize("name", OPS)
def test_robust_ops_replay_and_are_deterministic_under_a_seed(name):
    """Catches an op drawing random numbers in ``apply`` (a replay would differ) or from
    anywhere but torch's seeded RNG (two seeded calls would differ)."""
    op, (x, t) = OPS[name](0.5), _batch()
    torch.manual_seed(3)
    first = op(x, t)
    torch.manual_seed(3)
    params = op.sample(x.shape, x.device)
    state = torch.get_rng_state()
    replay = op(x, t, params=params)
    assert torch.equal(torch.get_rng_state(), state), "apply must not touch the RNG"
    assert torch.equal(first[0], replay[0]) and torch.equal(first[1], replay[1])
    torch.manual_seed(4)
    assert not torch.equal(op(x, t)[0], first[0]), "another seed, other draws"


@pytest.mark.parametrize("name", ["noise", "blur", "contrast"])
def test_probability_zero_is_the_identity(name):
    """Catches an op that changes images its coin did not pick."""
    x, t = _batch()
    torch.manual_seed(0)
    out, targets = OPS[name](0.0)(x, t)
    assert torch.equal(out, x) and torch.equal(targets, t)


def test_noise_std_of_the_difference_is_the_drawn_sigma():
    """Catches a wrong noise scale (sigma applied twice, per batch instead of per image,
    variance for std) and noise reaching images whose coin said no."""
    torch.manual_seed(0)
    x = torch.full((64, 3, 32, 32), 0.5)  # mid-grey: sigma <= 0.1 never reaches the clip
    op = GaussNoise(0.5, 0.1)
    params = op.sample(x.shape, x.device)
    diff = op.apply(x, None, params)[0] - x
    applied, sigma = params["applied"].view(-1), params["sigma"].view(-1)
    assert 10 < applied.sum() < 54 and sigma.max() <= 0.1 and sigma.std() > 0.01  # per image
    measured = diff.std((1, 2, 3))
    assert torch.allclose(measured[applied], sigma[applied], rtol=0.05, atol=2e-3)
    assert torch.equal(diff[~applied], torch.zeros_like(diff[~applied]))


def test_blur_lowers_high_frequency_energy_more_for_larger_sigma():
    """Catches a blur that does nothing, sharpens, or ignores each image's sigma."""
    torch.manual_seed(0)
    x = torch.rand(1, 1, 28, 28).expand(32, 1, 28, 28).contiguous()  # one image, many sigmas
    op = GaussBlur(1.0, 2.0)
    params = op.sample(x.shape, x.device)
    out = op.apply(x, None, params)[0]
    energy, sigma = _high_freq_energy(out), params["sigma"]
    assert (energy <= _high_freq_energy(x)).all() and (energy[sigma > 0.5] < 0.5 * _high_freq_energy(x)[0]).all()
    order = sigma.argsort()
    assert (energy[order].diff() <= 1e-7).all(), "a wider blur leaves less high-frequency energy"
    assert torch.allclose(out.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=0.02)  # blur keeps the mean


def test_contrast_scales_the_deviation_from_the_image_mean():
    """Catches contrast about the wrong centre (0, or per channel) or by the wrong factor."""
    torch.manual_seed(0)
    x, _ = _batch(32, 3, 12)
    op = Contrast(1.0, 0.2, 1.0)
    params = op.sample(x.shape, x.device)
    out = op.apply(x, None, params)[0]
    mean = x.mean((1, 2, 3), keepdim=True)
    assert torch.allclose(out - mean, params["factor"] * (x - mean), atol=1e-6)
    assert torch.allclose(out.mean((1, 2, 3)), mean.view(-1), atol=1e-6)


def test_robust_ops_join_the_pipeline_only_when_on():
    """Catches an op added (and drawing random numbers) for a recipe that did not ask for it,
    which would break every golden history."""
    assert BatchAugment(AugmentConfig(crop_pad=2), 10, 28).ops.__len__() == 1
    on = BatchAugment(AugmentConfig(contrast_p=0.5, blur_p=0.5, noise_p=0.5, mixup_alpha=0.2, augmix=True), 10, 28)
    kinds = [type(op).__name__ for op in on.ops]
    assert kinds[:3] == ["Contrast", "GaussBlur", "GaussNoise"] and kinds[-1] == "AugMix"


@pytest.mark.parametrize("fields,match", [
    ({"noise_p": 1.5}, "probabilities"), ({"blur_sigma": 0.0}, "blur_sigma"),
    ({"contrast_min": 0.9, "contrast_max": 0.5}, "contrast_min"), ({"augmix_jsd": True}, "needs augmix"),
    ({"augmix": True, "augmix_depth": 0}, "augmix_depth"), ({"augmix_jsd_weight": -1.0}, "augmix_jsd_weight"),
])
def test_recipe_refuses_bad_robustness_fields(fields, match):
    with pytest.raises(RecipeError, match=match):
        Recipe(**fields)


def test_robustness_fields_default_off_and_parse_from_set():
    r = Recipe()
    assert (r.noise_p, r.blur_p, r.contrast_p, r.augmix, r.augmix_jsd) == (0, 0, 0, False, False)
    r = apply_overrides(r, ["augmix=true", "augmix_jsd=on", "augmix_width=2", "noise_p=0.3"])
    assert r.augment_config().views == 3 and r.consistency_config().augmix_jsd_weight == 12.0


# --- 2. AugMix ---------------------------------------------------------------------------

def test_augmix_leaves_out_the_ops_that_overlap_the_benchmark():
    """Catches contrast/color/brightness/sharpness creeping into AugMix's list."""
    assert set(AUGMIX_OPS) == {"autocontrast", "equalize", "posterize", "rotate", "solarize",
                               "shear_x", "shear_y", "translate_x", "translate_y"}
    assert not set(AUGMIX_OPS) & set(EXCLUDED)


def test_augmix_weights_sum_to_one_and_the_output_is_their_convex_mix():
    """Catches weights that do not sum to 1, a wrong mixing formula, or images leaving [0, 1]."""
    torch.manual_seed(0)
    x, t = _batch(32, 3, 16)
    op = AugMix(16, width=3, depth=-1)
    params = op.sample(x.shape, x.device)
    assert torch.allclose(params["ws"].sum(1), torch.ones(32)) and (params["ws"] >= 0).all()
    assert ((params["m"] >= 0) & (params["m"] <= 1)).all() and params["m"].std() > 0.05  # per image
    chains = op.chains(x, params)
    out = op.apply(x, t, params)[0]
    m = params["m"].view(-1, 1, 1, 1)
    want = (1 - m) * x + m * sum(params["ws"][:, i].view(-1, 1, 1, 1) * c for i, c in enumerate(chains))
    assert torch.allclose(out, want, atol=1e-6)
    stack = torch.stack([x, *chains])
    assert (out >= stack.amin(0) - 1e-6).all() and (out <= stack.amax(0) + 1e-6).all()
    assert out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, x)


def test_augmix_of_identity_chains_returns_the_image():
    """Catches mixing that does not conserve the image (weights not normalised, m applied twice)."""
    torch.manual_seed(0)
    x, t = _batch(32, 1, 12)
    op = AugMix(12, width=4, depth=-1, ops={"identity": lambda x, level, sign: x})
    assert torch.allclose(op(x, t)[0], x, atol=1e-6)


def test_augmix_chains_have_the_drawn_depths():
    """Catches depth -1 not drawing 1..3 ops per chain (or a fixed depth not being used)."""
    torch.manual_seed(0)
    params = AugMix(12, width=3, depth=-1).sample(torch.Size((200, 1, 12, 12)), torch.device("cpu"))
    depths = torch.stack([sum((s["op"] >= 0).long() for s in steps) for steps in params["chains"]])
    assert set(depths.unique().tolist()) == {1, 2, 3}
    fixed = AugMix(12, width=2, depth=2).sample(torch.Size((50, 1, 12, 12)), torch.device("cpu"))
    assert len(fixed["chains"][0]) == 2 and all((s["op"] >= 0).all() for s in fixed["chains"][0])


@pytest.mark.parametrize("name", sorted(AUGMIX_OPS))
def test_each_augmix_op_keeps_shape_and_range_and_changes_something(name):
    """Catches an op that breaks on a batch of per-image levels, leaves [0, 1] or does nothing."""
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16) * 0.8 + 0.1
    level, sign = torch.full((8,), 2.9), torch.tensor([1, -1] * 4)
    out = AUGMIX_OPS[name](x, level, sign)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x, atol=1e-3)


def test_augmix_grouped_and_masked_steps_agree():
    """Catches the accelerator path (every op on the whole batch, then a per-image select)
    drifting from the CPU path (each op on the images that drew it)."""
    torch.manual_seed(0)
    x, t = _batch(32, 3, 16)
    op = AugMix(16)
    params = op.sample(x.shape, x.device)
    op.grouped = True
    grouped = op.apply(x, t, params)[0]
    op.grouped = False
    assert torch.allclose(op.apply(x, t, params)[0], grouped, atol=1e-6)


def test_warp_translates_by_whole_pixels():
    """Catches an affine grid off by a pixel or scaled wrongly (what translate/rotate/shear rely on)."""
    x = torch.rand(2, 1, 10, 10)
    eye = torch.eye(2).repeat(2, 1, 1)
    out = warp(x, eye, torch.tensor([[2.0, 0.0], [0.0, -3.0]]))
    assert torch.allclose(out[0, :, :, :8], x[0, :, :, 2:], atol=1e-6)
    assert torch.allclose(out[0, :, :, 8:], torch.zeros(1, 10, 2))
    assert torch.allclose(out[1, :, 3:, :], x[1, :, :7, :], atol=1e-6)


def test_augmix_views_put_the_clean_batch_first():
    """Catches JSD views in the wrong order (the objective takes the first B as clean)."""
    torch.manual_seed(0)
    x, t = _batch(8, 3, 12)
    out, targets = AugMixViews(AugMix(12), 2)(x, t)
    assert out.shape[0] == 24 and torch.equal(out[:8], x) and torch.equal(targets, t)
    assert not torch.allclose(out[8:16], out[16:])  # two independent views
    aug = BatchAugment(AugmentConfig(augmix=True, augmix_jsd=True), 10, 12)
    assert aug.views == 3 and aug(x, t.argmax(1))[0].shape[0] == 24


def test_js_divergence_is_zero_for_identical_views_and_matches_the_formula():
    """Catches a JSD that is not 0 on agreement, or not H(M) - mean H(p_i)."""
    torch.manual_seed(0)
    z = torch.randn(16, 10)
    assert js_divergence([z, z.clone(), z.clone()]).abs() < 1e-6
    views = [torch.randn(16, 10) for _ in range(3)]
    p = [F.softmax(v, 1) for v in views]
    m = sum(p) / 3

    def entropy(q):
        return -(q * q.log()).sum(1)

    direct = (entropy(m) - sum(entropy(q) for q in p) / 3).mean()
    got = js_divergence(views)
    assert got > 0 and torch.allclose(got, direct, atol=1e-5)
    assert got <= math.log(3)


def test_jsd_objective_is_ce_on_the_clean_view_plus_lambda_jsd_and_returns_clean_logits():
    """Catches CE taken on the augmented views, the wrong weight, or 3B logits reaching the
    epoch statistics (which would count every image three times)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    x, t = _batch(8, 3, 4)
    views = torch.cat([x, torch.rand(16, 3, 4, 4)])
    objective = make_objective(None, Recipe().distill_config(), ConsistencyConfig(True, 12.0))
    assert isinstance(objective, JensenShannon)
    loss, logits = objective(net, views, t)
    all_logits = net(views)
    want = CrossEntropy()(net, x, t)[0] + 12.0 * js_divergence(all_logits.chunk(3))
    assert logits.shape == (8, 10) and torch.allclose(logits, all_logits[:8])
    assert torch.allclose(loss, want, atol=1e-6)
    with pytest.raises(ValueError, match="3 views"):
        objective(net, x, t)


def test_jsd_gradient_reaches_all_three_views():
    """Catches a detached view (a JSD term that trains nothing, or softmaxes of constants)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    _, t = _batch(8, 3, 4)
    views = torch.rand(24, 3, 4, 4, requires_grad=True)
    loss, _ = JensenShannon(CrossEntropy(), 12.0)(net, views, t)
    loss.backward()
    for part in views.grad.chunk(3):
        assert part.abs().sum() > 0
    # the augmented views get gradient through the JSD term only: weight 0 leaves them none
    views.grad = None
    JensenShannon(CrossEntropy(), 0.0)(net, views, t)[0].backward()
    assert views.grad[8:].abs().sum() == 0 and views.grad[:8].abs().sum() > 0


def test_jsd_around_distillation_gives_the_teacher_the_clean_view_once():
    """Catches the teacher seeing all three views, or being re-run for SAM's second pass."""
    from tinycnn.objective import DistillConfig

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    seen = []
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    teacher.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    _, t = _batch(8, 3, 4)
    views = torch.rand(24, 3, 4, 4)
    objective = make_objective(teacher, DistillConfig(kd_alpha=0.5), ConsistencyConfig(True, 12.0))
    for _ in range(2):  # SAM evaluates the same batch twice
        loss, logits = objective(net, views, t)
    assert seen == [8] and logits.shape == (8, 10) and torch.isfinite(loss)


def test_default_objective_is_unchanged_without_jsd():
    assert type(make_objective(None, Recipe().distill_config(), Recipe().consistency_config())) is CrossEntropy


def test_augmix_jsd_fit_counts_each_image_once(mnist_splits):
    """A 1-epoch fit on 256 MNIST images with every robustness field on runs end to end, and its
    accuracy statistics count each training image once (not once per view)."""
    from tinycnn.callbacks import Callback
    from tinycnn.data import Splits
    from tinycnn.engine import fit
    from tinycnn.ladders import get_phase

    class Counts(Callback):
        def __init__(self):
            self.seen = []

        def on_batch_end(self, run, step, stats):
            self.seen.append((step, float(stats.correct)))

    s = mnist_splits
    splits = Splits(s.info, s.train.subset(256), s.val.subset(64), s.test.subset(64))
    recipe = Recipe(epochs=1, batch_size=64, augmix=True, augmix_jsd=True, noise_p=0.5, blur_p=0.3,
                    contrast_p=0.3, crop_pad=2, seed=0)
    counts = Counts()
    result = fit(get_phase("mnist", "slim"), recipe, splits, device="cpu", callbacks=[counts])
    record = result.history[0]
    assert [step for step, _ in counts.seen] == [0, 1, 2, 3]
    assert all(correct <= 64 * (step + 1) for step, correct in counts.seen)
    assert 0 <= record["train_acc"] <= 1 and math.isfinite(record["train_loss"])
    assert record["train_acc"] * 256 == pytest.approx(counts.seen[-1][1])


# --- 3. the std block ------------------------------------------------------------------------

def test_std_block_exact_output_on_a_hand_made_image():
    """Catches the wrong statistics (sample std, pooled channels) or a misplaced eps."""
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]], [[2.0, 2.0], [2.0, 6.0]]]])
    out = PerImageStandardize(eps=1e-5)(x)
    # channel 0: mean 0.5, std 0.5; channel 1: mean 3, std sqrt(3)
    want0 = torch.tensor([[-0.5, 0.5], [-0.5, 0.5]]) / (0.5 + 1e-5)
    want1 = torch.tensor([[-1.0, -1.0], [-1.0, 3.0]]) / (math.sqrt(3.0) + 1e-5)
    assert torch.allclose(out[0, 0], want0, atol=1e-6) and torch.allclose(out[0, 1], want1, atol=1e-6)
    assert PerImageStandardize()(torch.full((1, 1, 3, 3), 0.7)).abs().max() < 0.01  # flat: ~0 (rounding / eps)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_std_block_makes_features_invariant_to_brightness_and_contrast(dataset):
    """Catches standardisation that the dataset Normalize before it breaks (pooled channels
    would fail on CIFAR-10), or a block not placed where the grammar says."""
    torch.manual_seed(0)
    arch = "std conv_k3_c8 max conv_k3_c8 gap"
    model = build(PhaseSpec.from_arch("x", dataset, arch)).eval()
    plain = build(PhaseSpec.from_arch("x", dataset, arch.replace("std ", ""))).eval()
    c, s = (1, 28) if dataset == "mnist" else (3, 32)
    x = torch.rand(4, c, s, s) * 0.5 + 0.2
    a = torch.tensor([0.3, 1.7, 0.8, 2.0]).view(-1, 1, 1, 1)
    b = torch.tensor([0.1, -0.2, 0.3, 0.0]).view(-1, 1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(a * x + b), model(x), atol=1e-4)
        assert not torch.allclose(plain(a * x + b), plain(x), atol=1e-2)
        per_channel = x * torch.tensor([0.5, 1.0, 1.5][:c]).view(1, -1, 1, 1) + 0.1
        assert torch.allclose(model(per_channel), model(x), atol=1e-4)


def test_std_block_costs_zero_params_and_macs_and_round_trips():
    with_std = build(PhaseSpec.from_arch("x", "cifar10", "std conv_k3_c8 std max conv_k3_c8 gap"))
    without = build(PhaseSpec.from_arch("x", "cifar10", "conv_k3_c8 max conv_k3_c8 gap"))
    assert count_params(with_std.features[0]) == 0 and count_params(with_std) == count_params(without)
    assert count_macs(with_std, "cifar10") == count_macs(without, "cifar10")
    assert str(parse_block("std")) == "std"
    spec = PhaseSpec.from_arch("x", "mnist", "std conv_k3_c8 gap")
    assert PhaseSpec.from_dict(spec.to_dict()) == spec and spec.arch == "std conv_k3_c8 gap"


@pytest.mark.parametrize("bad", ["std_c8", "std_k3", "stdd", "standardize"])
def test_bad_std_tokens_list_the_accepted_blocks(bad):
    with pytest.raises(SpecError, match="accepted blocks:.*std") as e:
        parse_block(bad)
    assert "drop_p10" in str(e.value)


def test_std_block_exports_to_onnx_and_matches_torch(tmp_path):
    """The dynamo exporter writes the block with standard ops and onnxruntime agrees with torch."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tinycnn.export import check_onnx, export_onnx, ops_by_domain

    torch.manual_seed(0)
    model = build(PhaseSpec.from_arch("x", "mnist", "std conv_k3_c8 max conv_k3_c8 gap")).eval()
    path = export_onnx(model, tmp_path / "m.onnx")  # batch 1, as model.onnx ships
    ops = ops_by_domain(path)
    assert set(ops) == {"ai.onnx"} and "ReduceMean" in ops["ai.onnx"]  # standard ops only
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    check = check_onnx(path, model, images)
    assert check["max_abs_logit_diff"] < 1e-5 and check["top1_agreement"] == 1.0
