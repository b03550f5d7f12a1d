import sys

from acestep_api.cli import main

sys.exit(main())
