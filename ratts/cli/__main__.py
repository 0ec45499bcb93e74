"""``python -m ratts.cli``: the same as the ``ratts`` script."""

from ratts.cli import main

main()
