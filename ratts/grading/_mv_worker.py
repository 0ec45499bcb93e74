"""Child process that runs math-verify; started by ``ratts.grading.sandbox`` as a script.

Protocol: one JSON object per line on stdin ``{"gold", "pred", "limit"}``, one per line on
stdout ``{"ok": bool}``; the first line written is ``{"ready": true}``. It imports nothing
from ratts, so it starts in well under a second.

Each comparison arms a real-time timer whose signal keeps its default action (terminate):
sympy can spin inside one C call (a huge integer power) where no Python handler would ever
run, but the kernel still ends the process. So an orphaned worker cannot spin for ever.
"""

from __future__ import annotations

import json
import logging
import signal
import sys


def _wrap(answer: str) -> str:
    """math-verify extracts from text; a bare answer is given to it as a boxed one."""
    if "\\boxed" in answer or "\\fbox" in answer:
        return answer
    text = answer.strip()
    if len(text) > 1 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$")
    return "\\boxed{" + text + "}"


def main() -> None:
    logging.disable(logging.CRITICAL)
    from math_verify import parse, verify

    # The first comparison pays for lazy imports and grammar set-up; pay it before "ready",
    # where the caller's start-up allowance covers it, not inside a caller's time limit.
    verify(parse("\\boxed{(1+x)^2}"), parse("\\boxed{x^2+2x+1}"), timeout_seconds=None)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            job = json.loads(line)
            signal.setitimer(signal.ITIMER_REAL, float(job.get("limit", 10.0)))
            gold = parse(_wrap(str(job["gold"])), parsing_timeout=None)
            pred = parse(_wrap(str(job["pred"])), parsing_timeout=None)
            ok = bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=None))
        except Exception:
            ok = False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
        out.write('{"ok": true}\n' if ok else '{"ok": false}\n')
        out.flush()


if __name__ == "__main__":
    main()
