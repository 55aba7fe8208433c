"""Edge processing: transforms on a stream's log, written to derived streams exactly once.

``spec`` checks ``[[streams.transforms]]``; ``expr`` compiles JMESPath expressions;
``ops`` holds the deterministic transforms; ``runner`` drives them over the log with
checkpoints tied to input offsets (docs/edge-processing.md).
"""

from .expr import Expression, ExpressionError
from .ops import Item
from .runner import TransformRunner
from .spec import KINDS, TransformSpec, build_chain, parse_transforms

__all__ = ["KINDS", "Expression", "ExpressionError", "Item", "TransformRunner",
           "TransformSpec", "build_chain", "parse_transforms"]
