"""Verifier file headers are schema-validated, tensor shapes checked before allocating (issue 14, case 3)."""

from __future__ import annotations

import json
import resource

import pytest
import torch
from safetensors.torch import save_file

from sprinter_ext.errors import InvalidArgumentError, SprinterError
from sprinter_ext.verifier import Verifier
from sprinter_ext.verifier.io import FORMAT, VerifierFileError

KEY = "sprinter_ext.verifier"


def _header(**over):
    h = {"format": FORMAT, "input_size": 4, "hidden": [3], "features": ["q_token"], "threshold": 0.5}
    h.update(over)
    return {k: v for k, v in h.items() if v is not _DROP}


_DROP = object()


def _tensors(widths=(5, 3, 1)):
    out = {}
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        out[f"linears.{i}.weight"] = torch.zeros(b, a)
        out[f"linears.{i}.bias"] = torch.zeros(b)
    return out


def _write(tmp_path, header_text, tensors=None):
    path = tmp_path / "v.safetensors"
    save_file(tensors if tensors is not None else _tensors(), str(path), metadata={KEY: header_text})
    return path


def test_a_good_file_loads(tmp_path):
    v = Verifier.load(_write(tmp_path, json.dumps(_header())))
    assert v.input_size == 4 and v.hidden == (3,) and v.features == ("q_token",)


BAD_HEADERS = {
    "list": "[1, 2, 3]",
    "string": json.dumps("a string"),
    "number": "42",
    "not json": "{not json",
    "deep nesting": json.dumps(_header(metrics={})).replace('"metrics": {}', '"metrics": ' + "[" * 5000 + "]" * 5000),
    "moderate nesting": json.dumps(_header(extra=json.loads("[" * 40 + "]" * 40))),
    "missing input_size": json.dumps(_header(input_size=_DROP)),
    "missing hidden": json.dumps(_header(hidden=_DROP)),
    "missing features": json.dumps(_header(features=_DROP)),
    "missing threshold": json.dumps(_header(threshold=_DROP)),
    "missing format": json.dumps(_header(format=_DROP)),
    "input_size 32.7": json.dumps(_header(input_size=32.7)),
    "input_size str": json.dumps(_header(input_size="4")),
    "input_size bool": json.dumps(_header(input_size=True)),
    "input_size 0": json.dumps(_header(input_size=0)),
    "hidden str": json.dumps(_header(hidden="3")),
    "hidden float": json.dumps(_header(hidden=[3.0])),
    "hidden 1e7 floats": json.dumps(_header(hidden=[1e7, 1e7])),
    "features str": json.dumps(_header(features="q_token")),
    "features unknown": json.dumps(_header(features=["nope"])),
    "features repeated": json.dumps(_header(features=["q_token", "q_token"])),
    "threshold str": json.dumps(_header(threshold="0.5")),
    "threshold NaN": json.dumps(_header(threshold=float("nan"))),
    "vocab_size float": json.dumps(_header(vocab_size=1.5)),
    "draft_arch int": json.dumps(_header(draft_arch=3)),
    "metrics list": json.dumps(_header(metrics=[1])),
}


@pytest.mark.parametrize("name", sorted(BAD_HEADERS))
def test_bad_header_is_a_named_error(tmp_path, name):
    path = _write(tmp_path, BAD_HEADERS[name])
    with pytest.raises(VerifierFileError) as info:
        Verifier.load(path)
    assert isinstance(info.value, (InvalidArgumentError, SprinterError, ValueError))


@pytest.mark.parametrize(
    "case",
    ["bias [1]", "bias 2-D", "weight transposed", "missing bias", "extra tensor", "int weight", "nan weight"],
)
def test_bad_tensors_are_a_named_error(tmp_path, case):
    t = _tensors()
    if case == "bias [1]":
        t["linears.0.bias"] = torch.zeros(1)  # would broadcast into [3]
    elif case == "bias 2-D":
        t["linears.0.bias"] = torch.zeros(1, 3)
    elif case == "weight transposed":
        t["linears.0.weight"] = torch.zeros(5, 3)
    elif case == "missing bias":
        del t["linears.1.bias"]
    elif case == "extra tensor":
        t["linears.2.weight"] = torch.zeros(1, 1)
    elif case == "int weight":
        t["linears.0.weight"] = torch.zeros(3, 5, dtype=torch.int32)
    elif case == "nan weight":
        t["linears.0.weight"] = torch.full((3, 5), float("nan"))
    with pytest.raises(VerifierFileError):
        Verifier.load(_write(tmp_path, json.dumps(_header()), t))


def test_huge_header_sizes_do_not_allocate(tmp_path):
    """hidden=[10**7, 10**7] in a tiny file: refused from the tensors' shapes, before any
    nn.Linear exists (building it would take ~400 TB)."""
    path = _write(tmp_path, json.dumps(_header(hidden=[10**7, 10**7])))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(VerifierFileError, match="shape|match"):
        Verifier.load(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB: < 100 MiB
