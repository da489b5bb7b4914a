"""One function per figure kind; every function returns a ``matplotlib.figure.Figure``.

The functions never show or save: the caller picks the output, e.g.
``fig.savefig(path, dpi=150, bbox_inches="tight"); plt.close(fig)``. Figures are made with
``plt.subplots`` (so notebooks display them) and drawn with the object-oriented API only.
Inputs are NumPy/JAX arrays or the NamedTuples of :mod:`bnn_jax.calibration` and
:mod:`bnn_jax.ood`; wrong shapes and non-finite values raise ``ValueError`` naming the
argument. Methods keep their colour across a figure (``tab10`` in the order given), so pass
them in the same order everywhere.

- :mod:`~bnn_jax.plotting.maps`: the 2-D toy study (notebook): ``uncertainty_maps``,
  ``posterior_draws``, ``adversarial_arrows``, ``sigmoid_entropy``, ``method_sheet``.
- :mod:`~bnn_jax.plotting.landscape`: ``loss_curves``, ``loss_surface``,
  ``gaussian_comparison``.
- :mod:`~bnn_jax.plotting.ellipses`: ``posterior_ellipses`` (the N/tau figure) and
  ``ellipse_axes``.
- :mod:`~bnn_jax.plotting.calibration`: ``reliability_diagram``, ``calibration_curves``.
- :mod:`~bnn_jax.plotting.ood`: ``entropy_histograms``, ``inverse_ecdf_curves``,
  ``family_inverse_ecdf``.
- :mod:`~bnn_jax.plotting.attacks`: ``attack_sweeps``.
- :mod:`~bnn_jax.plotting.structures`: ``curvature_structures``, ``kronecker_product``,
  ``relative_error``.
"""

from bnn_jax.plotting.attacks import attack_sweeps
from bnn_jax.plotting.calibration import LOGIT_MARGIN, calibration_curves, reliability_diagram
from bnn_jax.plotting.ellipses import ellipse_axes, posterior_ellipses
from bnn_jax.plotting.landscape import gaussian_comparison, loss_curves, loss_surface
from bnn_jax.plotting.maps import (
    adversarial_arrows,
    method_sheet,
    posterior_draws,
    sigmoid_entropy,
    uncertainty_maps,
)
from bnn_jax.plotting.ood import entropy_histograms, family_inverse_ecdf, inverse_ecdf_curves
from bnn_jax.plotting.structures import curvature_structures, kronecker_product, relative_error

__all__ = [
    "LOGIT_MARGIN",
    "adversarial_arrows",
    "attack_sweeps",
    "calibration_curves",
    "curvature_structures",
    "ellipse_axes",
    "entropy_histograms",
    "family_inverse_ecdf",
    "gaussian_comparison",
    "inverse_ecdf_curves",
    "kronecker_product",
    "loss_curves",
    "loss_surface",
    "method_sheet",
    "posterior_draws",
    "posterior_ellipses",
    "relative_error",
    "reliability_diagram",
    "sigmoid_entropy",
    "uncertainty_maps",
]
