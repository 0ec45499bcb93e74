"""Answer extraction and time-limited equivalence checking."""

from ratts.grading.equivalence import grade, is_equivalent
from ratts.grading.extract import extract_answer, has_boxed, states_final_answer

__all__ = ["extract_answer", "grade", "has_boxed", "is_equivalent", "states_final_answer"]
