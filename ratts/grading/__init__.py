"""Answer extraction and time-limited equivalence checking."""

from ratts.grading.equivalence import grade, is_equivalent
from ratts.grading.extract import extract_answer, has_boxed, stated_answer, states_final_answer

__all__ = [
    "extract_answer",
    "grade",
    "has_boxed",
    "is_equivalent",
    "stated_answer",
    "states_final_answer",
]
