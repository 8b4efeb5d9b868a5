"""A Lambda's cold start: import its modules without garbage collection, then freeze them.

Importing boto3, Pydantic, Powertools and our models makes ~90k objects that live as long as
the process. With the collector on, every full collection during the imports walks all of
them and frees next to nothing (~700 objects), and every later one (in each invocation, and
at exit) walks them again. Pausing the collector while importing and then `gc.freeze()`-ing
what was made (moved to a generation no collection walks) removes that work; the price is the
few hundred cyclic garbage objects of the imports, kept for the life of the process.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def long_lived_imports() -> Iterator[None]:
    """Run the imports in the block with the collector paused, then freeze what they made."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.freeze()
