"""The built-in judge backends, one module each; importing this package registers them
(``llm`` first, then ``offline``: the order of ``registry.backend_kinds()``)."""

from . import llm, offline

__all__ = ["llm", "offline"]
