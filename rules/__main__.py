import sys

from rules.coverage import main

sys.exit(main())
