"""clipsearch: find photos on your own disks by what is in them."""

import os

# numpy's BLAS only ever multiplies small matrices here (one query through the numpy text
# tower, exact scores of a few thousand rows). Its worker threads cost more than they give
# there, and on a busy machine (a crawl in another process) they make a 0.3 ms product
# take 15 ms. torch keeps its own thread pool. Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
