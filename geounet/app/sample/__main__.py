"""``python -m geounet.app.sample OUT_DIR [--overwrite] [--seed N] [--no-quicklook]``."""

import sys

from geounet.app.sample.files import main

if __name__ == "__main__":
    sys.exit(main())
