import pytest
import torch
import torch.nn.functional as F

from tinycnn.augment import AugmentConfig, BatchAugment, cutout, mixup, random_crop, random_flip, smooth_one_hot


def test_smoothing_matches_torch_cross_entropy():
    logits, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    t = smooth_one_hot(y, 10, 0.1)
    assert torch.allclose(t.sum(1), torch.ones(16))
    ours = -(t * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(ours, F.cross_entropy(logits, y, label_smoothing=0.1))


def _is_solid_rectangle(mask: torch.Tensor) -> tuple[int, int]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert mask.sum() == h * w, "zeroed region is not one solid rectangle"
    return int(h), int(w)


def test_cutout_zeroes_exactly_one_clipped_square():
    torch.manual_seed(0)
    x = torch.ones(200, 3, 32, 32)
    out = cutout(x, 8)
    full = 0
    for img in out:
        mask = img[0] == 0
        assert torch.equal(mask, img[1] == 0), "same hole in every channel"
        h, w = _is_solid_rectangle(mask)
        assert h <= 8 and w <= 8
        full += (h, w) == (8, 8)
    assert full > 100  # interior centres give the full 8x8 square


def test_kornia_cutout_keeps_square_inside():
    torch.manual_seed(0)
    aug = BatchAugment(AugmentConfig(cutout=8, backend="kornia"), 10, 32)
    out, _ = aug(torch.ones(20, 3, 32, 32), torch.zeros(20, dtype=torch.long))
    for img in out:
        assert _is_solid_rectangle(img[0] == 0) == (8, 8)


def test_random_crop_is_a_reflect_padded_translation():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 12, 12)
    out = random_crop(x, 2)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(8):
        windows = [padded[i, :, dy:dy + 12, dx:dx + 12] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_flip_mirrors_about_half():
    torch.manual_seed(0)
    x = torch.rand(400, 1, 4, 4)
    out = random_flip(x)
    flipped = sum(torch.equal(o, i.flip(2)) for o, i in zip(out, x))
    kept = sum(torch.equal(o, i) for o, i in zip(out, x))
    assert flipped + kept == 400 and 150 < flipped < 250


def test_mixup_with_explicit_lambda():
    x, y = torch.rand(4, 1, 5, 5), smooth_one_hot(torch.tensor([0, 1, 2, 3]), 10, 0.0)
    lam, perm = torch.tensor([1.0, 0.25, 0.5, 0.0]), torch.tensor([1, 2, 3, 0])
    xm, ym = mixup(x, y, 1.0, lam=lam, perm=perm)
    assert torch.allclose(xm[1], 0.25 * x[1] + 0.75 * x[2])
    assert torch.allclose(ym[1, [1, 2]], torch.tensor([0.25, 0.75]))
    assert torch.equal(xm[0], x[0]) and torch.equal(xm[3], x[0])


@pytest.mark.parametrize("backend,kind", [("tensor", "mixup"), ("kornia", "mixup"), ("tensor", "cutmix")])
def test_mixed_targets_sum_to_one_and_match_the_images(backend, kind):
    # Each image is its own one-hot label painted over all pixels (10 channels): after
    # mixing, an image's channel means ARE the share of each class in it, so they must
    # equal the mixed target exactly - for Mixup's lambda and CutMix's box area alike.
    torch.manual_seed(0)
    y = torch.randint(0, 10, (64,))
    x = F.one_hot(y, 10).float().view(64, 10, 1, 1).expand(64, 10, 16, 16).contiguous()
    cfg = AugmentConfig(backend=backend, **({"mixup_alpha": 1.0} if kind == "mixup" else {"cutmix_alpha": 1.0}))
    xm, t = BatchAugment(cfg, 10, 16)(x, y)
    assert torch.allclose(t.sum(1), torch.ones(64))
    assert torch.allclose(xm.mean((2, 3)), t, atol=1e-5)
    assert (t.max(1).values < 1).any(), "some samples must actually be mixed"


def test_label_smoothing_applies_before_mixing():
    torch.manual_seed(0)
    y = torch.randint(0, 10, (32,))
    _, t = BatchAugment(AugmentConfig(mixup_alpha=0.4, label_smoothing=0.1), 10, 8)(torch.rand(32, 1, 8, 8), y)
    assert torch.allclose(t.sum(1), torch.ones(32))
    assert t.min() >= 0.01 - 1e-6  # every class keeps at least eps/K


# --- ops: sample, then apply (issue #14) ---------------------------------------------------

from tinycnn.augment import (  # noqa: E402
    CutMix, Cutout, KorniaCrop, KorniaCutout, KorniaFlip, KorniaMixup, Mixup, RandomApply, RandomCrop, RandomFlip,
)

OPS = {
    "crop": lambda: RandomCrop(3),
    "flip": RandomFlip,
    "cutout": lambda: Cutout(5),
    "mixup": lambda: Mixup(0.4),
    "cutmix": lambda: CutMix(1.0),
    "cutmix_or_mixup": lambda: RandomApply(CutMix(1.0), 0.5, otherwise=Mixup(0.4)),
    "gated_mixup": lambda: RandomApply(Mixup(0.4), 0.7),
    "kornia_crop": lambda: KorniaCrop(3, 12),
    "kornia_flip": KorniaFlip,
    "kornia_cutout": lambda: KorniaCutout(5, 12),
    "kornia_mixup": lambda: KorniaMixup(0.4),
}


def _batch(b=16, c=3, s=12):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(b, c, s, s, generator=gen)
    return x, smooth_one_hot(torch.randint(0, 10, (b,), generator=gen), 10, 0.1)


@pytest.mark.parametrize("name", OPS)
def test_op_replays_its_params_exactly_and_apply_draws_nothing(name):
    op, (x, t) = OPS[name](), _batch()
    for seed in range(4):  # several seeds, so the coins of RandomApply land both ways
        torch.manual_seed(seed)
        called = op(x, t)
        torch.manual_seed(seed)
        params = op.sample(x.shape, x.device)
        state = torch.get_rng_state()
        replayed = [op(x, t, params=params) for _ in range(2)]
        assert torch.equal(torch.get_rng_state(), state), "apply must not touch the RNG"
        for xo, to in replayed:  # sample + apply is the call, and a replay repeats it
            assert torch.equal(xo, called[0]) and torch.equal(to, called[1])


def _kornia_crop_params(op: KorniaCrop, x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> dict:
    """kornia's crop params with the box moved to the given top-left offsets (padded-image
    coordinates); ``src`` is (B, 4, 2) corners as (x, y), inclusive, clockwise from top-left."""
    params = op.sample(x.shape, x.device)
    h, w = x.shape[-2:]
    x0, y0 = dx.view(-1).float(), dy.view(-1).float()
    x1, y1 = x0 + w - 1, y0 + h - 1
    params["src"] = torch.stack([torch.stack(p, -1) for p in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))], 1)
    return params


def test_kornia_and_tensor_crop_agree_given_the_same_offsets():
    x, t = _batch(b=32)
    tensor_op, kornia_op = RandomCrop(3), KorniaCrop(3, 12)
    params = tensor_op.sample(x.shape, x.device)
    params["dy"][:2], params["dx"][:2] = torch.tensor([[0], [6]]), torch.tensor([[6], [0]])  # the extremes too
    ours, _ = tensor_op(x, t, params=params)
    theirs, _ = kornia_op(x, t, params=_kornia_crop_params(kornia_op, x, params["dy"], params["dx"]))
    assert torch.equal(ours, theirs)


def test_kornia_crop_offsets_read_back_into_the_tensor_crop():
    x, t = _batch()
    kornia_op = KorniaCrop(3, 12)
    params = kornia_op.sample(x.shape, x.device)
    dx, dy = params["src"][:, 0].long().unbind(-1)
    ours, _ = RandomCrop(3)(x, t, params={"dy": dy.view(-1, 1), "dx": dx.view(-1, 1)})
    assert torch.equal(ours, kornia_op(x, t, params=params)[0])


def test_kornia_and_tensor_flip_draw_the_same_coins():
    # Both draw one uniform per image on the CPU generator and flip below 0.5.
    x, t = _batch(b=64)
    torch.manual_seed(0)
    ours, _ = RandomFlip()(x, t)
    torch.manual_seed(0)
    theirs, _ = KorniaFlip()(x, t)
    assert torch.equal(ours, theirs)


def test_kornia_and_tensor_cutout_agree_on_an_interior_square():
    x, t = _batch()
    tensor_op, kornia_op = Cutout(5), KorniaCutout(5, 12)
    cy, cx = torch.randint(2, 10, (16, 1, 1)), torch.randint(2, 10, (16, 1, 1))  # square fully inside
    params = kornia_op.sample(x.shape, x.device)
    params["ys"], params["xs"] = (cy - 2).view(-1).float(), (cx - 2).view(-1).float()
    ours, _ = tensor_op(x, t, params={"cy": cy, "cx": cx})
    assert torch.equal(ours, kornia_op(x, t, params=params)[0])


def test_kornia_and_tensor_mixup_agree_with_complementary_lambdas():
    # kornia weights the paired image by lambda, we weight the image itself: lam_k = 1 - lam.
    x, t = _batch()
    lam, perm = torch.rand(16), torch.randperm(16)
    kornia_op = KorniaMixup(0.4)
    params = kornia_op.sample(x.shape, x.device)
    params["mixup_lambdas"], params["mixup_pairs"] = 1 - lam, perm
    ours, theirs = Mixup(0.4)(x, t, params={"lam": lam, "perm": perm}), kornia_op(x, t, params=params)
    assert torch.allclose(ours[0], theirs[0], atol=1e-6) and torch.allclose(ours[1], theirs[1], atol=1e-6)


def test_backend_picks_an_implementation_per_op():
    cfg = dict(crop_pad=2, flip=True, cutout=4, mixup_alpha=0.2)
    tensor_ops = BatchAugment(AugmentConfig(**cfg), 10, 16).ops
    kornia_ops = BatchAugment(AugmentConfig(backend="kornia", **cfg), 10, 16).ops
    assert [type(op) for op in tensor_ops] == [RandomCrop, RandomFlip, Cutout, RandomApply]
    assert [type(op) for op in kornia_ops] == [KorniaCrop, KorniaFlip, KorniaCutout, RandomApply]
    assert isinstance(tensor_ops[-1].op, Mixup) and isinstance(kornia_ops[-1].op, KorniaMixup)
    # CutMix is a tensor op in both backends, so with it on the kornia backend mixes with tensor ops too
    both = BatchAugment(AugmentConfig(backend="kornia", mixup_alpha=0.2, cutmix_alpha=1.0), 10, 16).ops
    assert [type(o) for o in (both[0].op.op, both[0].op.otherwise)] == [CutMix, Mixup]


@pytest.mark.parametrize("backend", ["tensor", "kornia"])
def test_mix_prob_is_the_chance_a_batch_is_mixed(backend):
    """Both backends mix a batch with chance mix_prob (kornia's once mixed with p(2 - p))."""
    from tinycnn.augment import AugmentConfig, BatchAugment

    torch.manual_seed(0)
    aug = BatchAugment(AugmentConfig(mixup_alpha=1.0, mix_prob=0.5, backend=backend), 10, 8)
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    mixed = [bool((aug(x, y)[1].max(1).values < 0.999).any()) for _ in range(400)]
    assert 0.42 < sum(mixed) / len(mixed) < 0.58


@pytest.mark.parametrize("backend,mix", [("tensor", {"mixup_alpha": 1.0}), ("tensor", {"cutmix_alpha": 1.0}),
                                         ("kornia", {"mixup_alpha": 1.0})])
def test_mix_ramp_starts_clean_and_ends_at_full_strength(backend, mix):
    """mix_ramp_epochs: epoch 0 mixes nothing, halfway the partner weighs at most half,
    and from the ramp's end the draws are exactly those of no ramp."""
    from tinycnn.augment import AugmentConfig, BatchAugment

    x, y = torch.rand(16, 3, 8, 8), torch.arange(16) % 10
    ramped = BatchAugment(AugmentConfig(mix_ramp_epochs=4, backend=backend, **mix), 10, 8)
    plain = BatchAugment(AugmentConfig(backend=backend, **mix), 10, 8)
    ramped.start_epoch(0)
    xa, t = ramped(x, y)
    assert torch.equal(xa, x) and torch.equal(t, F.one_hot(y, 10).float())
    ramped.start_epoch(2)
    assert all(ramped(x, y)[1].max(1).values.min() >= 0.5 - 1e-6 for _ in range(20))
    ramped.start_epoch(4)
    torch.manual_seed(3)
    a = ramped(x, y)
    torch.manual_seed(3)
    b = plain(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
