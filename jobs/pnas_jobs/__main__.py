import sys

from pnas_jobs.cli import main

sys.exit(main())
