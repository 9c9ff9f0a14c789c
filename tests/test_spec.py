"""The spec parser: every user mistake is one sentence naming the field and value."""

import pytest

from datamodels.errors import DatamodelsError, SpecError
from datamodels.spec import load_spec, spec_from_dict

from conftest import DIGITS_SPEC


def test_digits_spec_loads_and_hash_ignores_fit_settings():
    spec = load_spec(DIGITS_SPEC)
    assert spec.experiment.alpha == 0.5 and spec.model.hidden == (64, 64)
    refit = spec.replace(fit={"n_lambdas": 7})
    assert refit.hash() == spec.hash()
    assert spec.replace(experiment={"seed": 1}).hash() != spec.hash()


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"experiment": {"alpha": 1.0}}, ["experiment.alpha", "1.0"]),
        ({"experiment": {"alpha": 0}}, ["experiment.alpha", "0"]),
        ({"experiment": {"n_modles": 3}}, ["experiment.n_modles", "not a known field"]),
        ({"experimnt": {}}, ["[experimnt]", "not a known section"]),
        ({"experiment": {"n_models": "many"}}, ["experiment.n_models", "'many'", "int"]),
        ({"model": {"name": "gpt"}}, ["model.name", "'gpt'"]),
        ({"targets": {"sets": ["val"]}}, ["targets.sets", "'val'"]),
        ({"experiment": {"n_models": 10}, "fit": {"holdout": 10}}, ["fit.holdout", "10"]),
    ],
)
def test_bad_fields_name_field_and_value(raw, words):
    with pytest.raises(SpecError) as e:
        spec_from_dict(raw)
    msg = str(e.value)
    assert isinstance(e.value, DatamodelsError) and isinstance(e.value, ValueError)
    assert msg.count("\n") == 0 and msg.endswith(".")
    for w in words:
        assert w in msg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment\nalpha = ")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)


def test_to_toml_reads_back_to_the_same_spec(tmp_path):
    spec = load_spec(DIGITS_SPEC).replace(experiment={"name": 'a "quoted" name'}, model={"hidden": [32]})
    p = tmp_path / "round.toml"
    p.write_text(spec.to_toml())
    assert load_spec(p) == spec
