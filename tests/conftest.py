import sys
from pathlib import Path

# The shared network catalogue lives next to the tests.
sys.path.insert(0, str(Path(__file__).parent))

# Long parametrized cases run only with the slow ones (-m "slow or not slow"): see slow_cases.py.
from slow_cases import pytest_collection_modifyitems  # noqa: E402, F401
