"""Fuzzing contract parsing: ONNX metadata from an untrusted file either gives a valid
:class:`PolicyContract` or a :class:`ContractError`, never another exception.

Starts from a valid contract's metadata and replaces values with random JSON, random text,
or drops/adds keys. ``TARGETS`` is the only place naming the parser (re-point it if the
contract module is refactored).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intermimic_policy.contract import ContractError, PolicyContract, expected_contract
from tests.fuzzing import Tally, fuzz_settings

# name -> (valid metadata, parser, cases)
TARGETS: dict[str, tuple[Callable[[], dict[str, str]], Callable[[Mapping[str, str]], Any], int]] = {
    "teacher": (lambda: expected_contract("teacher").to_metadata(),
                lambda meta: PolicyContract.from_metadata(meta, "fuzz.onnx"), 300),
    "student": (lambda: expected_contract("student").to_metadata(),
                lambda meta: PolicyContract.from_metadata(meta, "fuzz.onnx"), 150),
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=20)


def _shrink_or_grow(value: Any, draw: st.DrawFn) -> Any:
    """A near miss of a valid value: a list cut or extended, a number changed, a key dropped."""
    if isinstance(value, list) and value:
        return value[: draw(st.integers(0, len(value)))] + draw(st.lists(json_values, max_size=2))
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        out = dict(value)
        if draw(st.booleans()):
            del out[key]
        else:
            out[key] = draw(json_values)
        return out
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return draw(st.sampled_from([0, -1, 1e308, -value, value * 1000, float("nan"), float("inf"), "1"]))
    return draw(json_values)


@st.composite
def mutated_metadata(draw: st.DrawFn, valid: dict[str, str]) -> dict[str, str]:
    meta = dict(valid)
    keys = sorted(meta)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["json", "near", "text", "drop", "add"]))
        key = draw(st.sampled_from(keys))
        if op == "json":
            meta[key] = json.dumps(draw(json_values))
        elif op == "near":
            meta[key] = json.dumps(_shrink_or_grow(json.loads(valid[key]), draw))
        elif op == "text":
            meta[key] = draw(st.text(max_size=20))
        elif op == "drop":
            meta.pop(key, None)
        else:
            meta[draw(st.text(max_size=10))] = draw(st.text(max_size=10))
    return meta


@pytest.mark.parametrize("target", list(TARGETS))
def test_mutated_contract_metadata_parses_or_raises_contract_error(target: str) -> None:
    build, parse, cases = TARGETS[target]
    valid = build()
    assert isinstance(parse(valid), PolicyContract)
    tally = Tally(f"contract.{target}")

    @fuzz_settings(cases)
    @given(meta=mutated_metadata(valid))
    def check(meta: dict[str, str]) -> None:
        try:
            contract = parse(meta)
        except ContractError as exc:
            assert "\n" not in str(exc), str(exc)
            tally.add("refused")
            return
        assert isinstance(contract, PolicyContract)
        json.dumps(contract.to_dict(), allow_nan=False)  # an accepted contract is finite and serializable
        tally.add("accepted")

    check()
    tally.report()


@pytest.mark.parametrize(("key", "text"), [("action_clip", "NaN"), ("control_hz", "Infinity"),
                                           ("kp", "[-Infinity]")])
def test_non_finite_metadata_is_refused(key: str, text: str) -> None:
    """Found by the fuzzer: Python's json accepted NaN/Infinity, so ``action_clip: NaN`` loaded
    (every action would have been clipped to NaN)."""
    meta = expected_contract("teacher").to_metadata()
    meta[key] = text
    with pytest.raises(ContractError, match=f"metadata '{key}' is not JSON: .* is not allowed"):
        PolicyContract.from_metadata(meta, "fuzz.onnx")


@pytest.mark.parametrize(("key", "value"), [("input", {"name": "obs", "dim": None, "dtype": "float32"}),
                                            ("output", {"name": "actions", "dim": "x"}),
                                            ("token_layout", {"tokens": [], "block_dim": 1599}),
                                            ("token_layout", {"tokens": 2, "block_dim": 1599, "ref_offsets": 5})])
def test_malformed_redundant_fields_are_a_contract_error(key: str, value: object) -> None:
    """Found by the fuzzer: ``"input": {"dim": null}`` raised a bare TypeError."""
    meta = expected_contract("teacher").to_metadata()
    meta[key] = json.dumps(value)
    with pytest.raises(ContractError, match="fuzz.onnx: malformed contract"):
        PolicyContract.from_metadata(meta, "fuzz.onnx")
