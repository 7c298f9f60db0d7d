"""CPU-sized stand-ins for the paper's backbones, written in the spirit of each network (not its
exact architecture, so released weights do not load into them). They serve the mini profile and
the demo, where a faithful paper-size network would not train in minutes on two cores; importing
this package registers them."""
from hiralign.restorers.tiny import qrnn3d, sert  # noqa: F401  (denoise)
from hiralign.restorers.tiny import sspsr, essa  # noqa: F401,I001  (super-resolution)
from hiralign.restorers.tiny import general  # noqa: F401  (general)
