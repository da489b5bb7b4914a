"""Draw ``docs/regression.png`` from the README's regression example, run as written.

    python docs/regression.py

The README's ``## Regression`` code block is executed (so the figure shows exactly what the
example computes), then the training data, the true function ``sin(3x)``, the linearised
predictive mean and two bands are drawn: +-2 standard deviations of the function (epistemic,
``variance - noise^2``) and of the predictive (with the learned observation noise).
"""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def readme_example() -> dict:
    """Run the README's regression block; return its namespace."""
    section = (ROOT / "README.md").read_text().split("\n## Regression\n", 1)[1].split("\n## ")[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace: dict = {}
    exec(block, namespace)
    return namespace


def main() -> None:
    ns = readme_example()
    from bnn_jax import laplace

    xs = np.asarray(ns["x_test"])[:, 0]
    mean = np.asarray(ns["mean"])[:, 0]
    variance = np.asarray(ns["variance"])[:, 0]
    noise = float(laplace.noise_std(ns["post"]))
    function_sd = np.sqrt(np.maximum(variance - noise**2, 0.0))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.fill_between(
        xs,
        mean - 2 * np.sqrt(variance),
        mean + 2 * np.sqrt(variance),
        color="tab:blue",
        alpha=0.18,
        lw=0,
        label="predictive, +-2 sd",
    )
    ax.fill_between(
        xs,
        mean - 2 * function_sd,
        mean + 2 * function_sd,
        color="tab:blue",
        alpha=0.35,
        lw=0,
        label="function (epistemic), +-2 sd",
    )
    ax.plot(xs, mean, color="tab:blue", lw=1.5, label="GLM predictive mean")
    ax.plot(xs, np.sin(3 * xs), color="k", lw=1, ls="--", label="sin(3x)")
    ax.scatter(
        np.asarray(ns["x"])[:, 0],
        np.asarray(ns["y"])[:, 0],
        s=6,
        color="tab:orange",
        label="training data",
        zorder=3,
    )
    ax.axvspan(-1, 1, color="0.9", zorder=0)
    ax.set_ylim(-3, 3)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(
        f"Laplace (dense GGN), linearised predictive: learned noise {noise:.3f} (true 0.1), "
        f"tau {float(ns['post'].prior_prec):.2f}",
        fontsize=9,
    )
    ax.legend(loc="lower left", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "regression.png", dpi=150)
    plt.close(fig)
    print("noise", noise, "sd at 0:", float(np.sqrt(variance[np.argmin(np.abs(xs))])))


if __name__ == "__main__":
    main()
