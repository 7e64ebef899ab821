"""DSPy integration for jacolbert: an RM for ``dspy.Retrieve``, a ReAct search tool, and a
``Retrieve`` whose programs save and load."""

from dspy_jacolbert.retrieve import Retrieve
from dspy_jacolbert.rm import JaColBERTRM, to_passage
from dspy_jacolbert.tools import make_search_tool

__all__ = ["JaColBERTRM", "Retrieve", "make_search_tool", "to_passage"]
__version__ = "0.1.0"
