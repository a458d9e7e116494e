"""clipsearch: find photos on your own disks by what is in them."""

__version__ = "0.1.0"
