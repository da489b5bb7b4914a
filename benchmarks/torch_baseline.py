"""The laplace-torch 0.3 side of the benchmark, run in its own process.

``python -m benchmarks.torch_baseline SPEC.json OUT.json`` loads the spec written by
``benchmarks.run`` (sizes, thread count, the path of an ``.npz`` with the data and each model's
flax weights), rebuilds each model in torch with exactly those weights (checked: the largest
logit difference is reported), times every stage and writes the results as JSON. It runs apart
from the jax process so that neither library's thread pool spins while the other one works,
and under an address-space limit (``Config.baseline_memory_gb``) so that a backend that asks
for more memory fails with a recorded error instead of pushing the machine into swap or the
out-of-memory killer.

Cases (laplace-torch API as in the issue; ``la = Laplace(model, "classification",
subset_of_weights="all", hessian_structure=...)``):

- ``train_epoch``: one epoch of Adam (lr 1e-3) on minibatches, NLL plus the Gaussian prior,
  the same objective as ``bnn_jax.training``;
- ``kron_fit/<backend>`` and ``diag_fit/<backend>``: ``la.fit(loader)``. In laplace-torch 0.3
  ``KronLaplace.fit`` accumulates the factors *and* eigendecomposes them
  (``H_facs.decompose()``) before returning; ``kron_decompose/<backend>`` times that
  decomposition alone so both halves can be compared with ours;
- ``mc_predictive/<n>``: ``la(x, pred_type="nn", link_approx="mc", n_samples=T)``;
- ``glm_probit/<backend>``: ``la(x, pred_type="glm", link_approx="probit")`` (the Jacobians
  come from the backend, so both are timed);
- ``marglik``: ``la.optimize_prior_precision(pred_type="glm", method="marglik", n_steps=...,
  lr=0.1, prior_structure="scalar")`` (Adam on log tau, like ``laplace.optimize_marglik``).

Backends: ``default`` is laplace-torch's default ``CurvlinopsGGN`` (exact GGN, "type-2");
``curvlinops_mc`` the same with ``stochastic=True`` (MC Fisher, one sample: like ours);
``backpack`` is ``BackPackGGN`` (exact: KFLR / DiagGGNExact) and ``backpack_mc`` with
``stochastic=True`` (KFAC / DiagGGNMC, one sample).
"""

import copy
import itertools
import json
import resource
import sys
import time
import traceback

import numpy as np

from benchmarks.timing import measure

BACKENDS = ("default", "curvlinops_mc", "backpack", "backpack_mc")


def _limit_memory(gigabytes: float) -> None:
    limit = int(gigabytes * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _mlp(torch, widths, weights):
    nn = torch.nn
    sizes = [784, *widths, 10]
    layers = [nn.Flatten()]
    for i, (d_in, d_out) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(d_in, d_out)
        linear.weight.data = torch.from_numpy(weights[f"Dense_{i}/kernel"].T.copy())
        linear.bias.data = torch.from_numpy(weights[f"Dense_{i}/bias"].copy())
        layers += [linear, nn.ReLU()] if i < len(widths) else [linear]
    return nn.Sequential(*layers)


def _conv(torch, weights, name, padding):
    kernel = weights[f"{name}/kernel"]  # [kh, kw, c_in, c_out]
    conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[:2], padding=padding)
    conv.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
    conv.bias.data = torch.from_numpy(weights[f"{name}/bias"].copy())
    return conv


def _lenet(torch, weights):
    nn = torch.nn
    first = weights["Dense_0/kernel"]  # rows in flax's (h, w, c) flattening of [5, 5, 16]
    chw = first.reshape(5, 5, 16, -1).transpose(2, 0, 1, 3).reshape(400, -1)
    linears = []
    for i, kernel in enumerate([chw, weights["Dense_1/kernel"], weights["Dense_2/kernel"]]):
        linear = nn.Linear(*kernel.shape)
        linear.weight.data = torch.from_numpy(kernel.T.copy())
        linear.bias.data = torch.from_numpy(weights[f"Dense_{i}/bias"].copy())
        linears.append(linear)
    return nn.Sequential(
        _conv(torch, weights, "Conv_0", 2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        _conv(torch, weights, "Conv_1", 0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        linears[0],
        nn.ReLU(),
        linears[1],
        nn.ReLU(),
        linears[2],
    )


def _backend(name):
    from laplace.curvature import BackPackGGN, CurvlinopsGGN

    return {
        "default": (None, None),
        "curvlinops_mc": (CurvlinopsGGN, {"stochastic": True}),
        "backpack": (BackPackGGN, None),
        "backpack_mc": (BackPackGGN, {"stochastic": True}),
    }[name]


def _error(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(err).__name__}: {text}"[:300]


class _Runner:
    """Times cases and records results or errors (one failing case never stops the rest)."""

    def __init__(self, spec):
        self.repeats = spec["repeats"]
        self.budget_s = spec["budget_s"]
        self.results = {}

    def time(self, name, fn, warmup=None, **extra):
        start = time.perf_counter()
        try:
            timing = measure(fn, repeats=self.repeats, budget_s=self.budget_s, warmup=warmup)
            self.results[name] = {
                "s": timing.median_s,
                "times_s": list(timing.times_s),
                "warmup_s": timing.warmup_s,
                **extra,
            }
        except (Exception, MemoryError) as err:  # recorded, e.g. an out-of-memory backend
            elapsed = time.perf_counter() - start
            self.results[name] = {
                "s": None,
                "error": _error(err),
                "failed_after_s": elapsed,
                **extra,
            }
            traceback.print_exc(file=sys.stderr)
        return self.results[name]


def _run_model(torch, laplace_cls, spec, arrays, name, runner):
    weights = {k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith(name + ":")}
    model = _mlp(torch, spec["mlp_widths"], weights) if name == "mlp" else _lenet(torch, weights)
    to_nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    x_train, y_train = to_nchw(arrays["x_train"]), torch.from_numpy(arrays["y_train"]).long()
    x_test = to_nchw(arrays["x_test"])
    batch_size = spec["batch_size"]
    with torch.no_grad():
        logits = model(x_test[:100]).numpy()
    diff = float(np.max(np.abs(logits - arrays[f"{name}:logits"])))
    runner.results[f"{name}/check"] = {"max_logit_diff": diff}

    dataset = torch.utils.data.TensorDataset(x_train, y_train)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    first = torch.utils.data.Subset(dataset, range(batch_size))
    one_batch = torch.utils.data.DataLoader(first, batch_size=batch_size, shuffle=False)

    # one epoch of training, on a copy so the MAP stays the jax side's
    def epoch(net, num_batches):
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
        net.train()
        for i in range(num_batches):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            out = net(x_train[idx])
            decay = sum((p**2).sum() for p in net.parameters())
            loss = torch.nn.functional.cross_entropy(out, y_train[idx])
            loss = loss + 0.5 * spec["prior_prec"] / len(x_train) * decay
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return net

    runner.time(
        f"{name}/train_epoch",
        lambda: epoch(copy.deepcopy(model), len(x_train) // batch_size),
        warmup=lambda: epoch(copy.deepcopy(model), 1),
    )

    def make(structure, backend):
        cls, kwargs = _backend(backend)
        # a fresh copy each: BackPACK extends the modules it sees, and torch.func (the
        # default backend's Jacobians) then refuses them
        return laplace_cls(
            copy.deepcopy(model),
            "classification",
            subset_of_weights="all",
            hessian_structure=structure,
            backend=cls,
            backend_kwargs=kwargs,
            prior_precision=spec["prior_prec"],
        )

    fitted = {}
    for structure in ("kron", "diag"):
        for backend in BACKENDS:
            if structure == "diag" and backend not in spec["diag_backends"]:
                runner.results[f"{name}/diag_fit/{backend}"] = {
                    "s": None,
                    "error": "skipped: builds per-example Jacobians (B x C x P) before failing",
                }
                continue
            la = make(structure, backend)
            result = runner.time(
                f"{name}/{structure}_fit/{backend}",
                lambda la=la: la.fit(loader),
                warmup=lambda la=la: la.fit(one_batch),
            )
            if result["s"] is not None:
                fitted[structure, backend] = la
            if structure == "kron" and result["s"] is not None:
                runner.time(f"{name}/kron_decompose/{backend}", lambda la=la: la.H_facs.decompose())

    kron = [fitted[k] for k in (("kron", "backpack_mc"), ("kron", "default")) if k in fitted]
    if not kron:
        return
    la = kron[0]
    torch.manual_seed(0)
    num_samples = spec["num_samples"]
    for label, x in (("test", x_test), ("small", x_test[: spec["small_inputs"]])):
        runner.time(
            f"{name}/mc_predictive/{label}",
            lambda x=x: la(x, pred_type="nn", link_approx="mc", n_samples=num_samples),
        )
    x_glm = x_test[: spec["glm_inputs"]]
    for backend in ("default", "backpack"):
        if ("kron", backend) not in fitted:
            continue
        la_b = fitted["kron", backend]
        runner.time(
            f"{name}/glm_probit/{backend}",
            lambda la_b=la_b: la_b(x_glm, pred_type="glm", link_approx="probit"),
            warmup=lambda la_b=la_b: la_b(x_glm[:2], pred_type="glm", link_approx="probit"),
        )

    def tune(steps):
        la.optimize_prior_precision(
            pred_type="glm",
            method="marglik",
            n_steps=steps,
            lr=0.1,
            init_prior_prec=spec["prior_prec"],
            prior_structure="scalar",
        )
        return la.prior_precision

    runner.time(f"{name}/marglik", lambda: tune(spec["marglik_steps"]), warmup=lambda: tune(2))


def main(spec_path: str, out_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    _limit_memory(spec["memory_gb"])
    start = time.perf_counter()
    import warnings

    import torch

    torch.set_num_threads(spec["threads"])
    warnings.filterwarnings("ignore")
    out = {"versions": {"torch": torch.__version__}, "threads": torch.get_num_threads()}
    runner = _Runner(spec)
    try:
        import laplace

        out["versions"]["laplace-torch"] = getattr(laplace, "__version__", "0.3")
        from laplace import Laplace
    except Exception as err:  # recorded: the baseline is optional
        hint = " (uninstall torchvision)" if "torchvision" in str(err) else ""
        out["error"] = f"import laplace failed{hint}: {_error(err)}"
        Laplace = None
    a = torch.ones(2048, 2048)
    matmul = measure(lambda: a @ a, repeats=spec["repeats"], budget_s=spec["budget_s"])
    out["matmul_gflops"] = 2 * 2048**3 / matmul.median_s / 1e9
    if Laplace is not None:
        arrays = dict(np.load(spec["arrays"]))
        for name in spec["models"]:
            try:
                _run_model(torch, Laplace, spec, arrays, name, runner)
            except Exception as err:  # recorded; the other model still runs
                runner.results[f"{name}/error"] = {"s": None, "error": _error(err)}
                traceback.print_exc(file=sys.stderr)
    out["cases"] = runner.results
    out["wall_s"] = time.perf_counter() - start
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
