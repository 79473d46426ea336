"""The model array (many runs at once): each stacked copy trains exactly as a single run of
its seed would, copies never mix, a copy unstacks into an ordinary model, and recipe
features the array does not implement are refused. Random MNIST-shaped data on the CPU;
float32, and float64 where a comparison runs over more steps than float32 can hold."""
import pytest
import torch
import torch.nn.functional as F

from tinycnn import build
from tinycnn.augment import AugmentConfig
from tinycnn.data import Split, Splits
from tinycnn.datasets import dataset_info
from tinycnn.engine import new_state
from tinycnn.errors import RecipeError
from tinycnn.evaluate import fraction_correct
from tinycnn.ladders import final_phase
from tinycnn.model_array import (
    ArrayAugment,
    ArrayBatches,
    ArraySGD,
    ModelArray,
    check_recipe,
    fit_array,
    train_step,
)
from tinycnn.recipe import Recipe, load_recipe
from tinycnn.spec import PhaseSpec

# Every kind of block with BatchNorm, SE, BlurPool, depthwise convs, residuals, the
# re-parameterisable RepConv branches, per-image standardisation and the GAP head.
ALL_BLOCKS = ("std conv_k3_c8 rep_k3_c8 repdw_k3 blur sep_k3_c8_se2 ir_k3_e2_c8_se2 fir_k3_e2_c8 "
              "cnx_k3_e2 dw_k3_c8 max pw_c8_r gap")
SMOOTHING, MOMENTUM, WD = 0.1, 0.9, 5e-4


def _split(n: int, dataset: str = "mnist", seed: int = 0) -> Split:
    info = dataset_info(dataset)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, info.channels, info.size, info.size), generator=g, dtype=torch.uint8)
    return Split(x, torch.randint(0, info.num_classes, (n,), generator=g))


def _seeded(spec, seed: int, dtype=torch.float32):
    torch.manual_seed(seed)
    return build(spec).to(dtype).train()


def _loss(logits, y):
    """Plain torch: cross-entropy against label-smoothed one-hot targets, in float32 (as the
    engine's objective computes it, so a float64 run rounds its loss the same way)."""
    targets = F.one_hot(y, 10).float() * (1 - SMOOTHING) + SMOOTHING / 10
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def _reference(spec, seed, batches, lrs, dtype=torch.float32):
    """A single model trained alone with plain torch from its seed: torch.optim.SGD with
    Nesterov momentum and weight decay on weights with ndim > 1 only, the given lr per step."""
    model = _seeded(spec, seed, dtype)
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": WD},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=1.0, momentum=MOMENTUM, nesterov=True)
    for (x, y), lr in zip(batches, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        _loss(model(x), y).backward()
        opt.step()
    return model


def _train_array(spec, seeds, split, steps, lrs, batch_size=16, wds=None, dtype=torch.float32):
    """``steps`` array steps on ArrayBatches' per-copy order, copy i at lr lrs[i] * (k + 1) /
    steps in step k. Returns the array and each step's (x, y), x as the copies saw it."""
    n = len(seeds)
    array = ModelArray([_seeded(spec, seed, dtype) for seed in seeds])
    sgd = ArraySGD(array, MOMENTUM, True, torch.tensor([WD] * n if wds is None else wds, dtype=dtype))
    augment = ArrayAugment(AugmentConfig(label_smoothing=SMOOTHING), 10, 28)
    seen = []
    for k, (x, y, _) in zip(range(steps), ArrayBatches(split, batch_size, seeds).indexed()):
        x = x.to(dtype)
        train_step(array.train(), sgd, *augment(x, y), torch.tensor(lrs, dtype=dtype) * (k + 1) / steps)
        seen.append((x, y))
    return array, seen


def _lrs(lr: float, steps: int) -> list[float]:
    return [lr * (k + 1) / steps for k in range(steps)]


def _assert_state_close(actual: dict, expected: dict, atol=1e-5):
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=atol, rtol=0, msg=name)


# Why float64 for the long comparison: on random images and labels these nets are chaotic in
# float32. A single model trained alone, merely laid out channels_last instead of contiguous,
# drifts 1e-4..1e-2 from itself within 2-4 steps: a rounding-sized change flips a ReLU whose
# input is within ~1e-7 of zero, its gradient path opens or closes, and the step moves by
# ~lr * 1e-3. No 1e-5 comparison of float32 trajectories can hold beyond a step or two, for
# the array or any other rewrite of the same maths; in float64 such flips are ~1e9 times rarer.
@pytest.mark.parametrize("spec", [PhaseSpec.from_arch("all", "mnist", ALL_BLOCKS), final_phase("mnist")],
                         ids=["all-blocks", "mnist-final"])
def test_each_copy_trains_exactly_as_a_single_run_float64(spec):
    """Copy i after 5 steps = its seed trained alone on copy i's batches with copy i's lrs:
    weights, BatchNorm running statistics and their counters."""
    seeds, lrs, steps = [3, 7, 11], [0.05, 0.1, 0.2], 5
    array, seen = _train_array(spec, seeds, _split(256), steps, lrs, dtype=torch.float64)
    for i, seed in enumerate(seeds):
        ref = _reference(spec, seed, [(x[i], y[i]) for x, y in seen], _lrs(lrs[i], steps), torch.float64)
        _assert_state_close(array.state_dict(i), ref.state_dict(), atol=1e-9)
    counters = [v.item() for name, v in array.state_dict(2).items() if name.endswith("num_batches_tracked")]
    assert counters and set(counters) == {steps}


def test_each_copy_after_two_steps_equals_a_single_run_float32():
    """The same in float32 over the steps it can hold (see above): torch's first SGD step (no
    momentum buffer yet), then one with momentum."""
    spec, seeds, lrs = final_phase("mnist"), [3, 7, 11], [0.02, 0.05, 0.1]
    array, seen = _train_array(spec, seeds, _split(256), 2, lrs)
    for i, seed in enumerate(seeds):
        ref = _reference(spec, seed, [(x[i], y[i]) for x, y in seen], _lrs(lrs[i], 2))
        _assert_state_close(array.state_dict(i), ref.state_dict())


def test_cifar10_final_vmaps_and_matches_a_single_run():
    spec, split = final_phase("cifar10"), _split(64, "cifar10")
    array = ModelArray.from_seeds(spec, [0, 1])
    sgd = ArraySGD(array, MOMENTUM, True, torch.tensor([WD, WD]))
    augment = ArrayAugment(AugmentConfig(label_smoothing=SMOOTHING), 10, 32)
    x, y, _ = next(ArrayBatches(split, 8, [0, 1]).indexed())
    train_step(array.train(), sgd, *augment(x, y), torch.tensor([0.1, 0.1]))
    ref = _reference(spec, 1, [(x[1], y[1])], [0.1])
    _assert_state_close(array.state_dict(1), ref.state_dict())


def test_copies_are_independent_and_differ_by_seed_and_lr():
    spec, split = PhaseSpec.from_arch("small", "mnist", "conv_k3_c8 sep_k3_c8_se2 blur gap"), _split(128)
    at_start = ModelArray.from_seeds(spec, [0, 1])
    assert not torch.equal(at_start.flat[0], at_start.flat[1])  # seeds differ -> inits differ
    torch.manual_seed(0)
    assert torch.equal(at_start.flat[0], torch.cat([p.flatten() for p in build(spec).parameters()]))
    # Seed 0 in all four copies (same init, same order); copy 2 trains with another lr, copy 3
    # without weight decay. float64, so that the comparison with a lone copy is exact (see above).
    f64 = torch.float64
    array, _ = _train_array(spec, [0, 0, 0, 0], split, 3, [0.1, 0.1, 0.3, 0.1], wds=[WD, WD, WD, 0.0], dtype=f64)
    alone, _ = _train_array(spec, [0], split, 3, [0.1], dtype=f64)
    assert torch.equal(array.flat[0], array.flat[1])
    assert (array.flat[0] - array.flat[2]).abs().max() > 1e-2
    assert (array.flat[0] - array.flat[3]).abs().max() > 1e-6
    _assert_state_close(array.state_dict(0), alone.state_dict(0), atol=1e-12)  # other copies do not leak in


def test_each_copy_has_its_own_order_whatever_the_number_of_copies():
    split = _split(64)
    (_, _, three), (_, _, one) = next(ArrayBatches(split, 16, [5, 6, 5]).indexed()), \
        next(ArrayBatches(split, 16, [6]).indexed())
    assert torch.equal(three[1], one[0]) and torch.equal(three[0], three[2])
    assert not torch.equal(three[0], three[1])


def test_unstacked_copy_loads_into_build_and_matches_the_array_in_eval():
    spec, split = PhaseSpec.from_arch("small", "mnist", "conv_k3_c8 rep_k3_c8 blur sep_k3_c8_se2 gap"), _split(128)
    array, _ = _train_array(spec, [0, 1, 2], split, 3, [0.1, 0.1, 0.1])
    val = _split(40, seed=1)
    logits = array.predict(val.x, batch_size=30)  # 10 images per call for 3 copies
    for i in range(3):
        model = build(spec)
        model.load_state_dict(array.unstack(i).state_dict())
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(val.x.float() / 255), logits[i], atol=1e-5, rtol=0)
    assert array.accuracy(val) == [fraction_correct(logits[i].argmax(1), val.y) for i in range(3)]


def test_init_is_the_engines_with_dirac_and_whitening():
    """Copy i starts where `engine.new_state` starts a run with seed i, recipe inits included;
    the frozen whitening conv is not trained."""
    spec, split = final_phase("mnist"), _split(256)
    recipe = Recipe(dirac_init=True, whiten_init=True)
    array = ModelArray.from_seeds(spec, [4, 9], recipe=recipe, images=split.x)
    for i, seed in enumerate([4, 9]):
        torch.manual_seed(seed)
        single = new_state(spec, recipe, 10, torch.device("cpu"), train=split).model
        _assert_state_close(array.state_dict(i), single.state_dict(), atol=0)
    frozen = "features.0.0.weight"
    assert frozen in array.fixed and frozen not in array.trainable
    assert not array.unstack(0).features[0][0].weight.requires_grad


def test_fit_array_trains_every_copy_and_returns_loadable_models():
    info = dataset_info("mnist")
    splits = Splits(info, _split(256), _split(64, seed=1), test=None)
    recipe = Recipe(epochs=2, batch_size=32, crop_pad=1, flip=True, cutout=4, noise_p=0.5, label_smoothing=0.05,
                    whiten_init=True)
    result = fit_array(final_phase("mnist"), recipe, splits, seeds=[0, 1], lrs=[0.05, 0.1], device="cpu")
    assert len(result.models) == 2 and len(result.history) == 2 and result.images_per_s > 0
    assert all(0 <= a <= 1 for a in result.val_accuracy) and result.diverged == [False, False]
    assert result.history[0]["train_loss"][0] != result.history[0]["train_loss"][1]
    build(final_phase("mnist")).load_state_dict(result.models[1].state_dict())
    start = ModelArray.from_seeds(final_phase("mnist"), [1], recipe=recipe, images=splits.train.x)
    assert torch.equal(result.models[1].features[0][0].weight, start.fixed["features.0.0.weight"][0])  # frozen
    with pytest.raises(RecipeError, match="lrs has 3 values for 2 copies"):
        fit_array(final_phase("mnist"), recipe, splits, seeds=[0, 1], lrs=[0.1] * 3, device="cpu")


@pytest.mark.parametrize("change", [
    {"sam_rho": 0.05}, {"ema_decay": 0.999}, {"swa": True}, {"kd_teacher": "dw"}, {"mixup_alpha": 0.2},
    {"cutmix_alpha": 1.0}, {"augmix": True}, {"lookahead": True}, {"optimizer": "adamw"}, {"amp": "bf16"},
    {"grad_clip": 1.0}, {"compile": True}, {"flip": True, "flip_mode": "alternate"}, {"aug_backend": "kornia"},
])
def test_unimplemented_recipe_features_are_refused_in_one_clear_error(change):
    recipe = Recipe(**change)
    name = next(k for k in change if k != "flip")
    with pytest.raises(RecipeError, match=rf"does not implement {name} = .*accepted fields: epochs, "):
        check_recipe(recipe)
    splits = Splits(dataset_info("mnist"), _split(64), _split(8), test=None)
    with pytest.raises(RecipeError, match="does not implement"):
        fit_array(final_phase("mnist"), recipe, splits, seeds=[0], device="cpu")


@pytest.mark.parametrize("dataset, name", [("mnist", "default"), ("cifar10", "default"), ("cifar10", "long_cutout")])
def test_the_ladders_recipes_without_extras_are_accepted(dataset, name):
    check_recipe(load_recipe(dataset, name))
