"""Every exercise check keeps its contract: each reference answer passes with one line, the
untouched stub says "not written yet", and each classic mistake fails with its own sentence.

The contracts live in tests/exercise_contracts/<module>.py, one file per
llama_edu/exercises/<module>.py; a check without one fails here.
"""

import re

import pytest
from exercise_contracts import CONTRACTS, CONTRACTS_BY_MODULE, Contract

from llama_edu import exercises
from llama_edu.exercises._common import call, expect, passed


def _where(name: str) -> str:
    module = getattr(exercises, name).__module__.rsplit(".", 1)[-1]
    return f"tests/exercise_contracts/{module}.py"


def _references_pass(name, check, contract, capsys):
    for k, reference in enumerate(contract.references):
        check(reference)
        out, err = capsys.readouterr()
        assert out.count("\n") == 1 and out.startswith("✔"), (
            f"{name}(reference {k}) should print exactly one line starting with ✔, got {out!r}")
        assert err == "", f"{name}(reference {k}) wrote to stderr: {err!r}"
        assert re.search(contract.passed, out), (
            f"{name}'s success line {out!r} does not match {contract.passed!r}")


def _stub_is_not_written_yet(name, check, contract, capsys):
    with pytest.raises(AssertionError, match="not written yet"):
        check(contract.stub)
    assert capsys.readouterr().err == "", f"{name}(stub) wrote to stderr"


def _mistakes_get_their_own_message(name, check, contract, capsys):
    messages = {}
    for k, (wrong, pattern) in enumerate(contract.mistakes):
        label = f"{name}(mistake {k}, expected /{pattern}/)"
        try:
            check(wrong)
        except AssertionError as error:
            message = str(error)
        else:
            pytest.fail(f"{label} passed: the check cannot tell this mistake from a right answer")
        assert re.search(pattern, message), f"{label} failed with another message:\n{message}"
        assert capsys.readouterr().err == "", f"{label} wrote to stderr"
        assert message not in messages, (
            f"{label} and mistake {messages.get(message)} got the same message; each classic "
            f"mistake needs its own sentence:\n{message}")
        messages[message] = k


@pytest.mark.parametrize("name", exercises.__all__)
def test_check_keeps_its_contract(name, capsys):
    contract = CONTRACTS.get(name)
    assert contract is not None, (
        f"{name} has no contract: add CONTRACTS[{name!r}] = Contract(references=[...], "
        f"mistakes=[(wrong_answer, 'regex of its message'), ...]) to {_where(name)}")
    assert contract.references, (
        f"{name}'s contract in {_where(name)} has no reference: add an answer that passes, "
        "written the way a learner would")
    assert contract.mistakes, (
        f"{name}'s contract in {_where(name)} has no mistakes: add each classic wrong answer "
        "with a regex of the message that explains it")
    check = getattr(exercises, name)
    _references_pass(name, check, contract, capsys)
    _stub_is_not_written_yet(name, check, contract, capsys)
    _mistakes_get_their_own_message(name, check, contract, capsys)


def test_contracts_name_only_checks_that_exist_in_their_module():
    for module, contracts in CONTRACTS_BY_MODULE.items():
        for name in contracts:
            assert name in exercises.__all__, (
                f"tests/exercise_contracts/{module}.py has a contract for {name}, which "
                "llama_edu.exercises does not export; rename or remove it")
            assert _where(name) == f"tests/exercise_contracts/{module}.py", (
                f"{name}'s contract sits in {module}.py; move it to {_where(name)}")


# ---- the contract test itself fails when it should --------------------------------------


def check_toy(fn):
    """fn(x) -> 2 * x, checked on x = 3."""
    out = call(fn, 3, what="double(3)")
    expect(out == 6, f"double(3) returned {out!r}, expected 6")
    passed("double is right")


@pytest.mark.parametrize("contract, complaint", [
    (None, "check_toy has no contract: add CONTRACTS"),
    (Contract(mistakes=[(lambda x: x, "expected 6")]), "has no reference"),
    (Contract(references=[lambda x: 2 * x]), "has no mistakes"),
    (Contract(references=[lambda x: 2 * x], mistakes=[(lambda x: x + 3, "")]),
     "cannot tell this mistake from a right answer"),
    (Contract(references=[lambda x: 2 * x], mistakes=[(lambda x: 5, "returned 5"),
                                                      (lambda x: 7 - 2, "returned 5")]),
     "mistake 1.* and mistake 0 got the same message"),
    (Contract(references=[lambda x: 2 * x], mistakes=[(lambda x: 5, "returned 4")]),
     "failed with another message"),
    (Contract(references=[lambda x: 2 * x], passed="triple", mistakes=[(lambda x: 5, "5")]),
     "success line .* does not match 'triple'"),
])
def test_a_broken_contract_fails(contract, complaint, monkeypatch, capsys):
    monkeypatch.setattr(exercises, "check_toy", check_toy, raising=False)
    if contract is not None:
        monkeypatch.setitem(CONTRACTS, "check_toy", contract)
    with pytest.raises((AssertionError, pytest.fail.Exception), match=complaint):
        test_check_keeps_its_contract("check_toy", capsys)
