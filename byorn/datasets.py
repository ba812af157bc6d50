"""The old home of the data loaders, kept so that code written against it (benchmarks/ and users'
scripts) still runs: everything now lives in `byorn.formats`, one module a layout."""

from byorn.formats import *  # noqa: F403
from byorn.formats import __all__  # noqa: F401
