"""Schemathesis hooks for scripts/test (loaded through SCHEMATHESIS_HOOKS).

CPython 3.11 keeps the AST constructor's recursion depth in interpreter-wide state, so
two threads inside `ast.parse` at once can fail with "SystemError: AST constructor
recursion depth mismatch" (python/cpython#106905; 3.11 is Debian 12's Python and this
machine's). Hypothesis parses the source of lambdas with `ast.parse` when it describes a
strategy, and `st run --workers 2` runs two test threads, so a CI run once ended in a
Runtime Error that had nothing to do with Hearth. Parsing under one lock removes the race
without giving up the second worker.
"""

import ast
import sys
import threading

if sys.version_info < (3, 12):
    _parse = ast.parse
    _lock = threading.Lock()

    def _serialized_parse(*args, **kwargs):
        with _lock:
            return _parse(*args, **kwargs)

    ast.parse = _serialized_parse
