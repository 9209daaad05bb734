"""The main job: ``python -m gbopt`` (the command line lives in :mod:`gbopt.demo.main`)."""

import sys

from gbopt.demo.main import main

if __name__ == "__main__":
    sys.exit(main())
