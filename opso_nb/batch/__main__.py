"""``python -m opso_nb.batch``: see :mod:`opso_nb.batch.cli`."""
import sys

from opso_nb.batch.cli import main

if __name__ == "__main__":  # guard: LocalCluster workers re-import the main module when they start
    sys.exit(main())
