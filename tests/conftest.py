import sys
from pathlib import Path

# The shared network catalogue lives next to the tests.
sys.path.insert(0, str(Path(__file__).parent))
