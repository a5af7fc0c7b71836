"""ddmini: Deceptive Diffusion, small and fast (arXiv 2406.19807)."""

import pkgutil

# Run from a source checkout (python -c / python -m from the repo root), `ddmini` is the source tree,
# which holds no compiled _C. Extending the package path with every other `ddmini` directory on
# sys.path (the installed one in site-packages) lets `ddmini._C` resolve to the installed extension.
__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
