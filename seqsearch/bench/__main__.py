"""`python -m seqsearch.bench …`: the same as `seqsearch bench …`."""

from __future__ import annotations

import sys

from seqsearch.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
