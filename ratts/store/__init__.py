"""The run log: every run of a strategy on a problem, for reports and for the router."""

from ratts.store.engine import make_engine
from ratts.store.repository import RunKey, Store, budget_label, open_store, problem_key

__all__ = ["RunKey", "Store", "budget_label", "make_engine", "open_store", "problem_key"]
