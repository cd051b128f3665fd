"""The spec: validated on creation, immutable, round-trips through dicts, JSON, YAML."""

from __future__ import annotations

import dataclasses
import json

import jsonschema
import pytest
from support import AXES, pairwise_points, spec_for

from rnncore import EncoderSpec, HeadSpec, InputSpec, ModelSpec, SpecError, json_schema

ISSUE_EXAMPLE = {
    "format": "rnncore.model/1",
    "input": {"kind": "tokens", "vocab_size": 20000, "embedding_dim": 128, "padding_idx": 0},
    "encoder": {"cell": "lstm", "hidden_size": 256, "num_layers": 2, "bidirectional": True,
                "residual": False, "dropout": 0.1, "nonlinearity": "tanh"},
    "pooling": "last",
    "head": {"hidden": [128], "activation": "leaky_relu", "negative_slope": 0.01,
             "dropout": 0.1, "num_outputs": 2, "task": "classification"},
    "dtype": "float32",
}  # fmt: skip

GRID_SPECS = [spec_for(p) for p in pairwise_points()]


def test_issue_example_round_trips_through_dict_and_json():
    spec = ModelSpec.from_dict(ISSUE_EXAMPLE)
    assert spec.to_dict() == ISSUE_EXAMPLE
    assert ModelSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("spec", GRID_SPECS, ids=lambda s: f"{s.encoder.cell}-{s.pooling}")
def test_every_grid_spec_round_trips_and_matches_the_schema(spec, tmp_path):
    jsonschema.validate(spec.to_dict(), json_schema())
    for name in ("spec.json", "spec.yaml"):
        spec.save(tmp_path / name)
        assert ModelSpec.from_file(tmp_path / name) == spec


def test_specs_are_immutable():
    spec = ModelSpec.from_dict(ISSUE_EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.pooling = "mean"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.encoder.hidden_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"encoder": {"cell": "transformer"}}, "encoder.cell", "'lstm'"),
        ({"encoder": {"hidden_size": 0}}, "encoder.hidden_size", ">= 1"),
        ({"encoder": {"num_layers": 2.5}}, "encoder.num_layers", "integer"),
        ({"encoder": {"dropout": 1.0}}, "encoder.dropout", "[0, 1)"),
        ({"encoder": {"bidirectional": "yes"}}, "encoder.bidirectional", "true or false"),
        (
            {"encoder": {"cell": "lstm", "nonlinearity": "relu"}},
            "encoder.nonlinearity",
            "only for cell 'rnn'",
        ),
        ({"encoder": {"hidden_sizes": 3}}, "encoder.hidden_sizes", "unknown field"),
        (
            {"input": {"kind": "tokens", "vocab_size": 10, "embedding_dim": 4, "padding_idx": 10}},
            "input.padding_idx",
            "< vocab_size",
        ),
        ({"input": {"kind": "image"}}, "input.kind", "'tokens', 'features'"),
        ({"input": {"kind": "features"}}, "input.feature_dim", ">= 1"),
        (
            {"input": {"kind": "features", "feature_dim": 3, "vocab_size": 9}},
            "input.vocab_size",
            "only allowed",
        ),
        ({"pooling": "sum"}, "pooling", "'attention'"),
        ({"head": {"activation": "swish"}}, "head.activation", "'gelu'"),
        ({"head": {"hidden": "128"}}, "head.hidden", "list of layer widths"),
        ({"head": {"task": "tagging"}}, "pooling", "must be 'none'"),
        ({"pooling": "none"}, "head.task", "use task 'tagging'"),
        ({"encoder": {"residual": True, "num_layers": 1}}, "encoder.residual", "turn residual off"),
        ({"dtype": "float16"}, "dtype", "'float32', 'float64'"),
        ({"format": "rnncore.model/9"}, "format", "rnncore.model/1"),
        ({"colour": "blue"}, "colour", "unknown field"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(change, field, words):
    data = json.loads(json.dumps(ISSUE_EXAMPLE))
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "input":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(SpecError) as err:
        ModelSpec.from_dict(data)
    assert err.value.path == field
    assert words in str(err.value)
    assert str(err.value).startswith(field)


def test_residual_is_allowed_where_some_layer_matches():
    spec = ModelSpec.from_dict({**ISSUE_EXAMPLE, "encoder": {**ISSUE_EXAMPLE["encoder"], "residual": True}})
    # layer 0 reads 128 and writes 512: no residual; layer 1 reads and writes 512
    assert spec.residual_layers == (False, True)


def test_tagging_and_featureless_heads():
    tagging = ModelSpec(pooling="none", head=HeadSpec(num_outputs=9, task="tagging"))
    assert tagging.per_step_output
    features_only = ModelSpec(pooling="mean", head=None)
    assert features_only.to_dict()["head"] is None


def test_sub_specs_can_be_objects_or_dicts():
    a = ModelSpec(
        input=InputSpec(kind="features", feature_dim=8), encoder=EncoderSpec(cell="gru", hidden_size=4)
    )
    b = ModelSpec.from_dict(
        {"input": {"kind": "features", "feature_dim": 8}, "encoder": {"cell": "gru", "hidden_size": 4}}
    )
    assert a == b


def test_malformed_files_give_spec_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        ModelSpec.from_file(tmp_path / "bad.json")
    (tmp_path / "bad.yaml").write_text("input: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        ModelSpec.from_file(tmp_path / "bad.yaml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(SpecError, match="an object"):
        ModelSpec.from_file(tmp_path / "list.json")


def test_schema_describes_every_spec_field():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    sections = {"input": InputSpec, "encoder": EncoderSpec, "head": HeadSpec}
    props = schema["properties"]
    assert set(props) == {"format"} | {f.name for f in dataclasses.fields(ModelSpec)}
    described = {
        "input": set().union(*(s["properties"] for s in props["input"]["oneOf"])),
        "encoder": set(props["encoder"]["properties"]),
        "head": set(props["head"]["oneOf"][1]["properties"]),
    }
    for name, cls in sections.items():
        assert described[name] == {f.name for f in dataclasses.fields(cls)}, name


def test_schema_rejects_what_the_spec_rejects():
    bad = {**ISSUE_EXAMPLE, "pooling": "sum"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json_schema())


def test_grid_axes_cover_every_choice_the_spec_offers():
    from rnncore import spec as spec_module

    assert {c.partition("-")[0] for c in AXES["cell"]} == set(spec_module.CELLS)
    assert set(AXES["pooling"]) == set(spec_module.POOLINGS)
    assert set(AXES["head"]) - {"none"} == set(spec_module.ACTIVATIONS)
    assert set(AXES["dtype"]) == set(spec_module.DTYPES)
