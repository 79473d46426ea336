import pytest

from tinycnn.errors import RecipeError
from tinycnn.recipe import Recipe, apply_overrides, load_recipe, recipe_names


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_shipped_recipes_load(dataset):
    names = recipe_names(dataset)
    assert {"default", "plain", "smoke"} <= set(names)
    for name in names:
        assert isinstance(load_recipe(dataset, name), Recipe)


def test_extends_inherits_and_overrides():
    base, plain = load_recipe("mnist", "default"), load_recipe("mnist", "plain")
    assert plain.schedule == "constant" and plain.epochs == base.epochs


def test_overrides_are_typed():
    r = apply_overrides(Recipe(), ["epochs=3", "lr=0.5", "flip=true", "step_milestones=0.3,0.6", "optimizer=adamw"])
    assert (r.epochs, r.lr, r.flip, r.step_milestones, r.optimizer) == (3, 0.5, True, (0.3, 0.6), "adamw")


@pytest.mark.parametrize("bad,match", [
    (["bogus=1"], "unknown recipe field 'bogus'"),
    (["epochs=three"], "expected a int"),
    (["flip=maybe"], "expected a bool"),
    (["optimizer=adam"], "optimizer must be one of sgd, adamw, radam"),
    (["epochs"], "key=value"),
    (["sam_rho=0.05", "amp=fp16"], "SAM with fp16"),
])
def test_bad_overrides(bad, match):
    with pytest.raises(RecipeError, match=match):
        apply_overrides(Recipe(), bad)


def test_unknown_recipe_and_cycles(tmp_path):
    with pytest.raises(RecipeError, match="no recipe 'fastest'.*accepted: default"):
        load_recipe("mnist", "fastest")
    f = tmp_path / "r.toml"
    f.write_text('[a]\nextends = "b"\n[b]\nextends = "a"\n')
    import tinycnn.recipe as rec

    with pytest.raises(RecipeError, match="cycle"):
        rec._resolve(rec.tomllib.loads(f.read_text()), "a", f, ())
    f.write_text("epochs = 2\nbogus = 1\n")
    with pytest.raises(RecipeError, match="bogus"):
        load_recipe("mnist", str(f))


def test_round_trip_dict():
    r = Recipe(step_milestones=(0.2,), swa=True)
    assert Recipe.from_dict(r.to_dict()) == r
