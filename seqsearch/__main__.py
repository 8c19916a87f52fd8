import sys

from seqsearch.cli import main

sys.exit(main())
