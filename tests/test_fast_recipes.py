"""Issue #19's "fewer epochs to target" recipe options, each off by default: the alternating
flip (``flip_mode``), identity convs (``dirac_init``) and the frozen whitening first conv
(``whiten_init``). Synthetic tensors, or a few steps on a slice of MNIST."""
import pytest
import torch
import torch.nn.functional as F

from tinycnn import build, get_phase
from tinycnn.augment import AlternatingFlip, AugmentConfig, BatchAugment, KorniaFlip, RandomFlip
from tinycnn.batches import TrainBatches, to_float
from tinycnn.callbacks import OnEpochEnd, SaveCheckpoint
from tinycnn.checkpoint import load_checkpoint
from tinycnn.data import Split, Splits
from tinycnn.engine import fit, new_state
from tinycnn.errors import RecipeError
from tinycnn.init import (dirac_convs, dirac_init_, first_conv, image_patches, initialise, patch_covariance,
                          whiten_first_conv_, whitening_filters)
from tinycnn.recipe import Recipe, apply_overrides
from tinycnn.spec import PhaseSpec

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(mnist_splits) -> Splits:
    s = mnist_splits
    return Splits(s.info, s.train.subset(256), s.val.subset(100), s.test.subset(100))


def _flipped(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per image: True if mirrored, False if kept (asserting it is one of the two)."""
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped ^ kept).all()), "each image must be exactly itself or its mirror"
    return flipped


def _epoch_flips(aug: BatchAugment, x: torch.Tensor, epoch: int, batch: int = 16) -> torch.Tensor:
    """Which of the ``x`` images one epoch of shuffled batches mirrored, by image index."""
    aug.start_epoch(epoch)
    flips = torch.zeros(len(x), dtype=torch.bool)
    perm = torch.randperm(len(x))
    for i in range(0, len(x), batch):
        idx = perm[i:i + batch]
        out, _ = aug(x[idx], torch.zeros(len(idx), dtype=torch.long), idx)
        flips[idx] = _flipped(out, x[idx])
    return flips


# --- alternating flip ----------------------------------------------------------------------


def test_alternate_flip_shows_each_image_both_ways_in_two_epochs():
    torch.manual_seed(0)
    x = torch.rand(256, 1, 4, 4)  # asymmetric: no image equals its mirror
    aug = BatchAugment(AugmentConfig(flip=True, flip_mode="alternate"), 10, 4, n_images=len(x), seed=3)
    assert [type(op) for op in aug.ops] == [AlternatingFlip]
    e0, e1, e2, e3 = (_epoch_flips(aug, x, epoch) for epoch in range(4))
    assert 96 < int(e0.sum()) < 160  # epoch 0: a fair coin per image
    assert bool((e0 ^ e1).all())  # every image flipped in exactly one of two consecutive epochs
    assert torch.equal(e2, e0) and torch.equal(e3, e1)
    # keyed by image, not by batch position: another shuffle gives the same flips
    assert torch.equal(_epoch_flips(aug, x, 0, batch=7), e0)
    # the coins follow the seed, and come from a generator of their own
    state = torch.get_rng_state()
    again = BatchAugment(AugmentConfig(flip=True, flip_mode="alternate"), 10, 4, n_images=len(x), seed=3)
    other = BatchAugment(AugmentConfig(flip=True, flip_mode="alternate"), 10, 4, n_images=len(x), seed=4)
    assert torch.equal(again.ops[0].coins, aug.ops[0].coins.cpu())
    assert not torch.equal(other.ops[0].coins, aug.ops[0].coins.cpu())
    out, _ = again(x[:8], torch.zeros(8, dtype=torch.long), torch.arange(8))
    assert torch.equal(torch.get_rng_state(), state), "the alternating flip drew from the global RNG"


def test_alternate_flip_is_the_same_in_both_backends():
    ops = BatchAugment(AugmentConfig(flip=True, flip_mode="alternate", backend="kornia"), 10, 8, n_images=10).ops
    assert [type(op) for op in ops] == [AlternatingFlip]


def test_random_flip_mode_is_unchanged():
    """The default draws what it drew before: one rand per batch, same op, same images,
    whether or not the engine passes indices."""
    cfg = AugmentConfig(flip=True)
    assert cfg.flip_mode == "random"
    assert [type(op) for op in BatchAugment(cfg, 10, 8).ops] == [RandomFlip]
    assert [type(op) for op in BatchAugment(AugmentConfig(flip=True, backend="kornia"), 10, 8).ops] == [KorniaFlip]
    x, y = torch.rand(64, 3, 8, 8), torch.arange(64) % 10
    torch.manual_seed(5)
    before, _ = RandomFlip()(x, None)  # the op as it was called before issue #19
    state_before = torch.get_rng_state()
    torch.manual_seed(5)
    plain, _ = BatchAugment(cfg, 10, 8)(x, y)
    torch.manual_seed(5)
    indexed, _ = BatchAugment(cfg, 10, 8, n_images=64)(x, y, torch.arange(64))
    assert torch.equal(plain, before) and torch.equal(indexed, before)
    assert torch.equal(torch.get_rng_state(), state_before)


def test_indexed_batches_are_train_batches_with_their_indices():
    x = torch.randint(0, 256, (40, 1, 3, 3), dtype=torch.uint8)
    split = Split(x, torch.arange(40) % 10)
    torch.manual_seed(1)
    plain = list(TrainBatches(split, 8))
    torch.manual_seed(1)
    indexed = list(TrainBatches(split, 8).indexed())
    assert len(plain) == len(indexed) == 5
    for (xp, yp), (xi, yi, idx) in zip(plain, indexed):
        assert torch.equal(xp, xi) and torch.equal(yp, yi)
        assert torch.equal(xi, to_float(x[idx])) and torch.equal(yi, split.y[idx])


def test_alternate_flip_needs_indices_and_a_split_size():
    with pytest.raises(ValueError, match="needs n_images"):
        BatchAugment(AugmentConfig(flip=True, flip_mode="alternate"), 10, 4)
    aug = BatchAugment(AugmentConfig(flip=True, flip_mode="alternate"), 10, 4, n_images=8)
    with pytest.raises(ValueError, match="image indices"):
        aug(torch.rand(8, 1, 4, 4), torch.zeros(8, dtype=torch.long))


def test_fit_with_alternate_flip_trains(tiny):
    r = fit(get_phase("mnist", "slim"), Recipe(epochs=2, batch_size=64, flip=True, flip_mode="alternate"),
            tiny, device="cpu")
    assert len(r.history) == 2 and all(torch.isfinite(torch.tensor(h["train_loss"])) for h in r.history)


# --- dirac init ----------------------------------------------------------------------------


def test_dirac_init_makes_identity_channels():
    torch.manual_seed(0)
    model = build(get_phase("cifar10", "final"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    convs = dirac_init_(model)
    # conv_k3_c16, conv_k3_c32, conv_k3_c64 widen; conv_k3_c48 (64 -> 48) narrows; dw and 1x1 convs are left out
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 16), (16, 32), (32, 64)]
    touched = set()
    for conv in convs:
        cin = conv.in_channels
        x = torch.randn(2, cin, 9, 9)
        out = conv(x)
        assert torch.allclose(out[:, :cin], x, atol=1e-6, rtol=0), "the first in channels copy the input"
        identity = torch.zeros_like(conv.weight[:cin])
        identity[torch.arange(cin), torch.arange(cin), 1, 1] = 1
        assert torch.equal(conv.weight[:cin], identity)
        name = next(k for k, p in model.named_parameters() if p is conv.weight)
        assert torch.equal(conv.weight[cin:], before[name][cin:]), "the other channels keep their init"
        touched.add(name)
    for k, v in model.state_dict().items():
        if k not in touched:
            assert torch.equal(v, before[k]), k


def test_inits_draw_nothing_and_off_is_bit_identical(tiny):
    spec = get_phase("mnist", "final")
    torch.manual_seed(0)
    reference = build(spec).state_dict()
    torch.manual_seed(0)
    plain = new_state(spec, Recipe(), 4, CPU, train=tiny.train)
    assert all(torch.equal(v, reference[k]) for k, v in plain.model.state_dict().items())
    torch.manual_seed(0)
    dirac = new_state(spec, Recipe(dirac_init=True), 4, CPU, train=tiny.train)
    names = {k for c in dirac_convs(dirac.model) for k, p in dirac.model.named_parameters() if p is c.weight}
    assert names, "mnist final has a widening k x k conv"
    for k, v in dirac.model.state_dict().items():
        assert torch.equal(v, reference[k]) != (k in names), k
    torch.manual_seed(0)
    model = build(spec)
    rng = torch.get_rng_state()
    initialise(model, Recipe(dirac_init=True, whiten_init=True), tiny.train.x)
    assert torch.equal(torch.get_rng_state(), rng), "an initialisation drew from the global RNG"


# --- whitening init ------------------------------------------------------------------------


def _smooth_images(n: int = 300, size: int = 16, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, size, size) with strongly correlated pixels and channels: a hard case."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, size // 4, size // 4, generator=g)
    grey = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    colour = grey * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1) + 0.1 * torch.rand(n, 3, size, size, generator=g)
    return (colour.clamp(0, 1) * 255).round().to(torch.uint8)


def _first_conv_outputs(model, images) -> torch.Tensor:
    conv = first_conv(model)
    p = image_patches(model.normalize(to_float(images)), conv.kernel_size).double()
    return p @ conv.weight.detach().double().flatten(1).T


@pytest.mark.parametrize("arch,kept", [("conv_k3_c16 max conv_k3_c16 gap", 16),
                                       ("conv_k3_c60 max conv_k3_c16 gap", 27)])
def test_whitened_first_conv_has_identity_covariance(arch, kept):
    torch.manual_seed(0)
    images = _smooth_images()
    model = build(PhaseSpec.from_arch("w", "cifar10", arch))
    before = first_conv(model).weight.detach().clone()
    eps = 1e-6
    conv = whiten_first_conv_(model, images, eps)
    out = _first_conv_outputs(model, images)
    cov = torch.cov(out.T)
    eigenvalues = torch.linalg.eigvalsh(patch_covariance(images, model.normalize, (3, 3))).flip(0)
    want = torch.diag(eigenvalues[:kept] / (eigenvalues[:kept] + eps))
    assert torch.allclose(cov[:kept, :kept], want, atol=2e-3), "kept directions come out whitened"
    assert float(want.diagonal().min()) > 0.9  # eps is small next to every kept variance here
    assert not conv.weight.requires_grad
    if conv.out_channels >= 54:  # room for airbench's pairs: +e_i, then -e_i, then the init
        assert torch.equal(conv.weight[27:54], -conv.weight[:27])
        assert torch.equal(conv.weight[54:], before[54:])
        assert torch.allclose(cov[:27, 27:54], -want, atol=2e-3)


def test_whitening_filters_are_scaled_eigenvectors():
    a = torch.randn(9, 9, dtype=torch.float64)
    cov = a @ a.T + 0.1 * torch.eye(9, dtype=torch.float64)
    eigenvalues, filters = whitening_filters(cov, 5e-4, torch.Size([1, 3, 3]))
    assert filters.shape == (18, 1, 3, 3) and bool((eigenvalues[:-1] >= eigenvalues[1:]).all())
    w = filters[:9].flatten(1)
    assert torch.allclose(w @ cov @ w.T, torch.diag(eigenvalues / (eigenvalues + 5e-4)), atol=1e-9)


def _whiten_recipe(**kw) -> Recipe:
    return Recipe(batch_size=64, whiten_init=True, schedule="constant", lr=0.05, **kw)


def test_whitened_conv_is_frozen_and_never_decayed(tiny):
    spec = get_phase("mnist", "slim")
    state = new_state(spec, _whiten_recipe(epochs=1), 4, CPU, train=tiny.train)
    conv = first_conv(state.model)
    assert not conv.weight.requires_grad
    in_groups = [p for g in state.optim.optimizer.param_groups for p in g["params"]]
    assert all(p is not conv.weight for p in in_groups), "a frozen weight in an optimiser group"
    assert all(p.requires_grad for p in in_groups)
    model = build(spec)
    expected = whiten_first_conv_(model, tiny.train.x, 5e-4).weight.detach().clone()
    assert torch.equal(conv.weight, expected)
    result = fit(spec, _whiten_recipe(epochs=1), tiny, device="cpu")  # 4 steps, weight decay on
    trained = first_conv(result.model)
    assert torch.equal(trained.weight, expected), "the whitening conv moved during training"
    other = result.model.features[1]
    fresh = build(spec).features[1]
    assert not all(torch.equal(a, b) for a, b in zip(other.parameters(), fresh.parameters()))


def test_whitened_conv_stays_frozen_across_resume(tiny, tmp_path):
    spec, recipe = get_phase("mnist", "slim"), _whiten_recipe(epochs=2, dirac_init=True)
    straight = fit(spec, recipe, tiny, device="cpu")

    def stop(run):
        if run.state.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(spec, recipe, tiny, device="cpu",
            callbacks=[SaveCheckpoint(tmp_path / "ck.pt"), OnEpochEnd(stop)])
    ckpt = load_checkpoint(tmp_path / "ck.pt")
    seen = {}

    def capture(run):
        seen["frozen"] = not first_conv(run.state.model).weight.requires_grad
        seen["groups"] = [p for g in run.state.optim.optimizer.param_groups for p in g["params"]]

    torch.manual_seed(999)  # the resumed run must not depend on the global RNG at restart
    resumed = fit(spec, recipe, tiny, device="cpu", resume_from=ckpt, callbacks=[OnEpochEnd(capture)])
    conv = first_conv(resumed.model)
    assert seen["frozen"] and all(p is not conv.weight for p in seen["groups"])
    assert torch.equal(conv.weight, first_conv(straight.model).weight)
    name = next(k for k, p in resumed.model.named_parameters() if p is conv.weight)
    assert torch.equal(ckpt["model"][name], conv.weight)
    strip = [{k: v for k, v in h.items() if "time" not in k and k != "images_per_s"} for h in straight.history]
    assert strip == [{k: v for k, v in h.items() if "time" not in k and k != "images_per_s"}
                     for h in resumed.history]


def test_whiten_init_refuses_a_model_without_a_plain_first_conv(tiny):
    spec = PhaseSpec.from_arch("dwfirst", "mnist", "dw_k3_c16 max sep_k3_c15 gap")
    with pytest.raises(RecipeError, match="whiten_init needs a plain conv block first.*'dw_k3_c16'"):
        new_state(spec, _whiten_recipe(), 4, CPU, train=tiny.train)
    spec = PhaseSpec.from_arch("stdfirst", "mnist", "std conv_k3_c8 max sep_k3_c15 gap")
    with pytest.raises(RecipeError, match="starts with 'std'"):
        fit(spec, _whiten_recipe(epochs=1), tiny, device="cpu")


# --- bad values ----------------------------------------------------------------------------


@pytest.mark.parametrize("fields,match", [
    (dict(flip=True, flip_mode="sometimes"), r"flip_mode must be one of random, alternate \(got 'sometimes'\)"),
    (dict(flip_mode="alternate"), "flip_mode = 'alternate' needs flip = true"),
    (dict(whiten_init=True, whiten_eps=0.0), "whiten_eps must be > 0"),
])
def test_bad_values_are_refused(fields, match):
    with pytest.raises(RecipeError, match=match):
        Recipe(**fields)


def test_overrides_parse_the_new_fields():
    r = apply_overrides(Recipe(), ["flip=true", "flip_mode=alternate", "dirac_init=yes", "whiten_init=1",
                                   "whiten_eps=1e-3"])
    assert (r.flip_mode, r.dirac_init, r.whiten_init, r.whiten_eps) == ("alternate", True, True, 1e-3)
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(RecipeError, match="flip_mode must be one of random, alternate"):
        apply_overrides(Recipe(flip=True), ["flip_mode=mirror"])
    with pytest.raises(RecipeError, match="dirac_init=maybe: expected a bool"):
        apply_overrides(Recipe(), ["dirac_init=maybe"])
