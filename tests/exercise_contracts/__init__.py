"""The exercise checks' contracts, one module per `llama_edu.exercises` module.

`tests/exercise_contracts/norms.py` holds `CONTRACTS = {"check_rmsnorm": Contract(...), ...}`
for the checks in `llama_edu/exercises/norms.py`; tests/test_exercise_contracts.py runs them.
"""

import importlib
import pkgutil

from ._contract import Contract, not_written

__all__ = ["CONTRACTS", "CONTRACTS_BY_MODULE", "Contract", "not_written"]

CONTRACTS_BY_MODULE: dict[str, dict[str, Contract]] = {}   # "norms" -> {"check_rmsnorm": ...}
CONTRACTS: dict[str, Contract] = {}                          # "check_rmsnorm" -> its contract

for _info in pkgutil.iter_modules(__path__):
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    CONTRACTS_BY_MODULE[_info.name] = _module.CONTRACTS
    for _name, _contract in _module.CONTRACTS.items():
        for _other, _contracts in CONTRACTS_BY_MODULE.items():
            if _other != _info.name and _name in _contracts:
                raise ValueError(f"{_name} has a contract in both {_other}.py and "
                                 f"{_info.name}.py; keep the one named after its module")
        CONTRACTS[_name] = _contract
