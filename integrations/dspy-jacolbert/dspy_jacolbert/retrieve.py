"""``Retrieve``: a drop-in ``dspy.Retrieve`` whose programs save and load.

DSPy 3.4.1's ``Module.dump_state`` calls ``param.dump_state(json_mode=...)`` on every
parameter, but ``dspy.Retrieve.dump_state`` takes no ``json_mode`` argument, so
``program.save("program.json")`` raises ``TypeError`` for any program that contains a
``dspy.Retrieve``. This subclass accepts it (and checks what it loads).
"""

from __future__ import annotations

from typing import Any

import dspy


class Retrieve(dspy.Retrieve):
    """``dspy.Retrieve`` with a working ``dump_state``/``load_state`` (state: ``k``).

    ``rm`` optionally binds this retriever to one RM (e.g. a :class:`JaColBERTRM`) instead of
    ``dspy.settings.rm``, so one program can search several indexes. It is not part of the
    saved state: pass it again when you rebuild the program before ``load``.
    """

    def __init__(self, k: int = 3, callbacks: list[Any] | None = None, rm: Any = None):
        super().__init__(k=k, callbacks=callbacks)
        self.rm = rm

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        return {"k": self.k}

    def load_state(self, state: dict[str, Any]) -> Retrieve:
        k = state.get("k", self.k)
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
            raise ValueError(f"saved state has an invalid k: {k!r}")
        self.k = k
        return self

    def forward(self, query: str, k: int | None = None, **kwargs: Any) -> dspy.Prediction:
        if self.rm is None:
            return super().forward(query, k=k, **kwargs)
        with dspy.context(rm=self.rm):
            return super().forward(query, k=k, **kwargs)
