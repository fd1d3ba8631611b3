"""GenHancer: enhance a CLIP-family vision encoder by reconstruction from its global token."""

__version__ = "0.1.0"
