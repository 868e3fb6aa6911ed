import sys

from flowtui.cli import main

sys.exit(main())
