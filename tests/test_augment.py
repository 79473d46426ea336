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
