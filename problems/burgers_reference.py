r"""Reference solution of viscous Burgers' equation by the Cole-Hopf transformation.

For u_t + u u_x = nu u_xx on the real line with u(x, 0) = -sin(pi x), the Cole-Hopf transformation
u = -2 nu phi_x / phi linearises the equation to phi_t = nu phi_xx, whose solution is a Gaussian
convolution. Differentiating under the integral (Basdevant et al., *Spectral and finite difference
solutions of the Burgers equation*, Computers & Fluids 14, 1986, eq. 3):

.. math::
    u(x, t) = -\frac{\int \sin(\pi(x - \eta))\, f(x - \eta)\, e^{-\eta^2 / (4 \nu t)}\, d\eta}
                   {\int f(x - \eta)\, e^{-\eta^2 / (4 \nu t)}\, d\eta},
    \qquad f(y) = \exp\!\left(-\frac{\cos(\pi y)}{2 \pi \nu}\right).

The solution is odd and 2-periodic in x, so it also solves the problem on [-1, 1] with u(+-1, t) = 0.
With eta = sqrt(4 nu t) z both integrals are Gauss-Hermite quadratures with nodes z_i and weights w_i,
and u is minus the mean of sin(pi y_i), y_i = x - sqrt(4 nu t) z_i, under the probabilities
p_i proportional to w_i f(y_i). Those are formed in log space (log w_i - cos(pi y_i) / (2 pi nu),
then a softmax), so f, up to exp(1 / (2 pi nu)), never overflows however small nu is. The same
probabilities give u_x in closed form: with s_i = sin(pi y_i), c_i = cos(pi y_i),

    u_x = -pi E[c] - Var[s] / (2 nu).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.special import logsumexp, roots_hermite

DEFAULT_MIN_NODES = 100


def default_nodes(nu: float) -> int:
    """Gauss-Hermite nodes for viscosity ``nu``: converged to ~1e-13 on [-1, 1] x [0, 1].

    ``nu`` must be > 0. The peaks of f sit at distance up to 2 from x, i.e. at |z| up to 1 / sqrt(nu t), and they narrow as nu
    falls; measured, 100 nodes suffice at nu = 0.01/pi, 200 at 1e-3 and 400 at 3e-4, hence ~0.12 / nu.
    """
    return max(DEFAULT_MIN_NODES, int(math.ceil(0.12 / nu)))


def _check(nu: float, nodes: int) -> None:
    if isinstance(nu, bool) or not (isinstance(nu, (int, float)) and math.isfinite(nu) and nu > 0):
        raise ValueError(f"the viscosity nu must be a finite number > 0, got {nu!r}")
    if int(nodes) != nodes or nodes < 2:
        raise ValueError(f"the number of Gauss-Hermite nodes must be an integer >= 2, got {nodes!r}")


def cole_hopf(x, t, nu: float, nodes: int | None = None, derivative: bool = False, chunk: int = 4096):
    """u(x, t) (and u_x when ``derivative``) of Burgers' equation with u(x, 0) = -sin(pi x).

    Args:
        x, t: arrays broadcastable to one shape S (t >= 0).
        nu: viscosity > 0.
        nodes: Gauss-Hermite nodes; ``None`` uses :func:`default_nodes`.
        derivative: also return u_x.
        chunk: points per block, bounding memory to ``chunk * nodes`` floats.

    Returns:
        u with shape S, or (u, u_x).
    """
    _check(nu, 2 if nodes is None else nodes)
    nu = float(nu)
    nodes = default_nodes(nu) if nodes is None else int(nodes)
    x, t = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(t, dtype=np.float64))
    if np.any(t < 0):
        raise ValueError("Cole-Hopf reference: times must be >= 0")
    shape = x.shape
    x, t = x.reshape(-1), t.reshape(-1)
    z, weights = roots_hermite(int(nodes))
    with np.errstate(divide="ignore"):  # far nodes' weights underflow to 0: log 0 = -inf drops them
        log_weights = np.log(weights)
    u, u_x = np.empty_like(x), np.empty_like(x)
    for start in range(0, len(x), chunk):
        xs, ts = x[start : start + chunk, None], t[start : start + chunk, None]  # (B, 1)
        y = xs - np.sqrt(4 * nu * ts) * z  # (B, nodes)
        sin, cos = np.sin(np.pi * y), np.cos(np.pi * y)
        log_p = log_weights - cos / (2 * np.pi * nu)
        p = np.exp(log_p - logsumexp(log_p, axis=1, keepdims=True))  # (B, nodes), rows sum to 1
        mean_sin = (p * sin).sum(axis=1)
        u[start : start + chunk] = -mean_sin
        if derivative:
            variance = np.clip((p * sin**2).sum(axis=1) - mean_sin**2, 0.0, None)
            u_x[start : start + chunk] = -np.pi * (p * cos).sum(axis=1) - variance / (2 * nu)
    u = u.reshape(shape)
    return (u, u_x.reshape(shape)) if derivative else u


@lru_cache(maxsize=8)
def reference_grid(nu: float, n_x: int = 256, n_t: int = 100, t_end: float = 1.0,
                   nodes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The reference on the tensor grid linspace(-1, 1, n_x) x linspace(0, t_end, n_t), computed once.

    Returns read-only arrays: points (n_x * n_t, 2) as (x, t) and values (n_x * n_t, 1). Raissi et al.'s
    data set uses the same 256 x 100 layout; about 0.2 s at nu = 0.01/pi, so it is cached in memory only.
    """
    if int(n_x) != n_x or int(n_t) != n_t or n_x < 2 or n_t < 2:
        raise ValueError(f"the reference grid needs integer sizes >= 2, got n_x={n_x!r}, n_t={n_t!r}")
    xs, ts = np.linspace(-1.0, 1.0, int(n_x)), np.linspace(0.0, float(t_end), int(n_t))
    grid_x, grid_t = np.meshgrid(xs, ts, indexing="ij")  # (n_x, n_t)
    values = cole_hopf(grid_x, grid_t, nu, nodes)
    points = np.stack([grid_x.reshape(-1), grid_t.reshape(-1)], axis=1)
    values = values.reshape(-1, 1)
    points.flags.writeable = False
    values.flags.writeable = False
    return points, values
