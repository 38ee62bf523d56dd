import sys

from rules.catalogue import main

sys.exit(main())
