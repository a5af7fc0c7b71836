"""ddmini: Deceptive Diffusion, small and fast (arXiv 2406.19807)."""

__version__ = "0.1.0"
