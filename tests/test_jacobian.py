"""The Gauss-Newton products J^T J and J^T R that Levenberg-Marquardt solves with, held to autograd.

The reference builds the stacked residual vector R (entries sqrt(w_t / N_t) r_tn) with the all-autograd
derivative engine and takes each row of J by its own backward pass, so it shares nothing with the
structured rows (tape records and closed-form per-point rows) or with the batched generic rows. Every
kind of problem that trains with L-BFGS is covered: Dirichlet and Neumann faces, hard constraints,
periodic pairs, several outputs, mixed derivatives (generic path), non-uniform knots, the MLP, and a
residual that is not pointwise (detected, then handled by the generic path). float64, 1e-10.
"""

from __future__ import annotations

import math

import pytest
import torch

from kanpde import KAN, MLP, Box, Problem, Sampler, dirichlet, neumann, periodic
from kanpde.jacobian import ParameterIndex, cell_keys, generic_rows, gram, structured_rows, symmetric
from kanpde.nn.tape import recording
from kanpde.objective import LeastSquares, _fields_factory, _named
from kanpde.problems.burgers import Burgers
from kanpde.problems.heat import ForcedHeat
from kanpde.problems.poisson import KANPaperPoisson
from kanpde.training import collocation

PI = math.pi
TOLERANCE = dict(rtol=1e-10, atol=1e-10)


class System(Problem):
    """Two outputs, two residual equations and a Neumann face: v_x + u_yy = f, v = u_x."""

    variables = ("x", "y")
    outputs = ("u", "v")

    def __init__(self):
        self.domain = Box(self.variables, (-1.0, -1.0), (1.0, 1.0))
        self.residual_weight = 0.5

    def residual(self, x, d):
        return {"poisson": d["v_x"] + d["u_yy"] - torch.sin(x[:, 0]), "flux": d["v"] - d["u_x"] * d["u"]}

    def conditions(self):
        return {"u": dirichlet(0.0, on=["x=-1", "x=1", "y=-1"], output="u"),
                "top": neumann(lambda x: x[:, 0], on="y=1", output="v", weight=3.0)}


class Mixed(Problem):
    """u_xx + u_xy + u_yy = 1: the mixed derivative comes from autograd (generic Jacobian rows)."""

    variables = ("x", "y")

    def __init__(self):
        self.domain = Box(self.variables, (0.0, 0.0), (1.0, 1.0))

    def residual(self, x, d):
        return d["u_xx"] + d["u_xy"] + d["u_yy"] - 1.0

    def conditions(self):
        return {"walls": dirichlet(0.0)}


class Advection(Problem):
    """u_t + u_x = 0 with a periodic pair in x and an initial condition."""

    variables = ("x", "t")

    def __init__(self):
        self.domain = Box.from_bounds(x=(-1.0, 1.0), t=(0.0, 1.0))

    def residual(self, x, d):
        return d["u_t"] + d["u_x"]

    def conditions(self):
        return {"initial": dirichlet(lambda x: torch.sin(PI * x[:, 0]), on="t=0", weight=10.0),
                "periodic": periodic(self.domain, "x", derivatives=2, weight=2.0)}


class Centred(KANPaperPoisson):
    """A residual that is not pointwise: every entry depends on every point through the mean."""

    def residual(self, x, d):
        r = d["u_xx"] + d["u_yy"] - self.source(x)
        return r - r.mean()


def reference_products(problem: Problem, model: torch.nn.Module, points: dict[str, torch.Tensor]):
    """J^T J, J^T R and ||R||^2 from R built by nested autograd, one backward pass per row of J."""
    entries = []
    groups = [("interior", problem.residual_weight, lambda x, d: problem.residual(x, d))]
    groups += [(name, c.weight, c.residual) for name, c in problem.conditions().items()]
    for name, weight, residual in groups:
        x = points[name].detach().requires_grad_(True)
        fields = _fields_factory(problem, model, "autograd", None)(x)
        for _, value in _named(residual(x, fields), name):
            entries.append(value.reshape(-1) * math.sqrt(weight / len(x)))
    vector = torch.cat(entries)
    parameters = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for entry in vector:
        grads = torch.autograd.grad(entry, parameters, retain_graph=True, allow_unused=True, materialize_grads=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    jacobian = torch.stack(rows)
    vector = vector.detach()
    return jacobian.T @ jacobian, jacobian.T @ vector, float(vector @ vector)


def kan(n_in: int, n_out: int, box: Box, order: int = 3, grid_size: int = 4) -> KAN:
    return KAN([n_in, 3, n_out], grid_size=grid_size, order=order, grid_range=box.ranges, seed=1).double()


def mlp(n_in: int, n_out: int, box: Box) -> MLP:
    return MLP([n_in, 6, 5, n_out], input_range=box.ranges, seed=1).double()


def points_for(problem: Problem, n_interior: int = 40, n_boundary: int = 24) -> dict[str, torch.Tensor]:
    return {k: v.double() for k, v in collocation(problem, Sampler("uniform", n_interior, n_boundary, seed=3)).items()}


CASES = {
    "poisson-kan-cubic": (KANPaperPoisson, lambda p: kan(2, 1, p.domain, order=3)),
    "poisson-kan-quintic": (KANPaperPoisson, lambda p: kan(2, 1, p.domain, order=5)),
    "poisson-kan-wide": (KANPaperPoisson, lambda p: KAN([2, 10, 1], grid_size=4, order=5, grid_range=p.domain.ranges,
                                                        seed=1).double()),  # dense first-layer splines
    "poisson-mlp": (KANPaperPoisson, lambda p: mlp(2, 1, p.domain)),
    "heat-hard-constraint": (ForcedHeat, lambda p: kan(2, 1, p.domain)),
    "burgers-stretched": (Burgers, lambda p: kan(2, 1, p.domain)),
    "system-two-outputs-neumann": (System, lambda p: kan(2, 2, p.domain)),
    "system-mlp": (System, lambda p: mlp(2, 2, p.domain)),
    "periodic-pair": (Advection, lambda p: kan(2, 1, p.domain, order=5)),
    "mixed-derivative": (Mixed, lambda p: kan(2, 1, p.domain)),
    "not-pointwise": (Centred, lambda p: kan(2, 1, p.domain)),
}
# Global bases (kanpde.nn.bases): every point touches every coefficient of an edge (record window = whole basis).
for _basis, _normalize in (("chebyshev", "affine"), ("chebyshev", "tanh"), ("fourier", "affine"), ("rbf", "affine")):
    CASES[f"poisson-{_basis}-{_normalize}"] = (KANPaperPoisson, lambda p, b=_basis, m=_normalize: KAN(
        [2, 3, 1], grid_size=4, grid_range=p.domain.ranges, seed=1, basis=b, normalize=m).double())
    CASES[f"burgers-{_basis}-{_normalize}-wide"] = (Burgers, lambda p, b=_basis, m=_normalize: KAN(
        [2, 5, 1], grid_size=3, grid_range=p.domain.ranges, seed=1, basis=b, normalize=m).double())


@pytest.mark.parametrize("case", sorted(CASES))
def test_gauss_newton_products_equal_autograd(case):
    make_problem, make_model = CASES[case]
    problem = make_problem()
    model = make_model(problem)
    points = points_for(problem)
    input_grad = ("interior",) if case == "mixed-derivative" else ()
    if input_grad:
        points["interior"].requires_grad_(True)
    objective = LeastSquares(problem, model, points, input_grad=input_grad)
    index = ParameterIndex(list(model.parameters()))
    products = objective.gauss_newton(index)
    jtj, jtr, loss = reference_products(problem, model, points)
    torch.testing.assert_close(products.jtj, jtj, **TOLERANCE)
    torch.testing.assert_close(products.jtr, jtr, **TOLERANCE)
    assert products.loss == pytest.approx(loss, rel=1e-12)
    assert products.loss == pytest.approx(objective.loss(), rel=1e-12)  # the loss L-BFGS minimises
    # The fast rows were used wherever they hold (a wrong fast row would otherwise hide behind the fallback).
    fast = {name for name, ok in objective._structured.items() if ok}
    expected = {"interior", *problem.conditions()}
    if case in ("mixed-derivative", "not-pointwise"):
        expected.discard("interior")
    assert fast == expected


def test_structured_rows_are_used_where_they_hold_and_refused_where_not():
    poisson, centred = KANPaperPoisson(), Centred()
    for problem, expected in ((poisson, True), (centred, False)):
        model = kan(2, 1, problem.domain)
        objective = LeastSquares(problem, model, points_for(problem))
        objective.gauss_newton(ParameterIndex(list(model.parameters())))
        assert objective._structured["interior"] is expected
        assert objective._structured["boundary"] is True


def test_jacobian_chunks_and_non_uniform_knots_give_the_same_products():
    problem = KANPaperPoisson()
    model = kan(2, 1, problem.domain, grid_size=5)
    points = points_for(problem, n_interior=90)
    model.update_grid(torch.cat(list(points.values())), adaptive=0.5, first_layer=True)  # quantile knots
    assert not model.layers[0].uniform
    index = ParameterIndex(list(model.parameters()))
    whole = LeastSquares(problem, model, points).gauss_newton(index)
    chunked = LeastSquares(problem, model, points, jacobian_chunk=7).gauss_newton(index)
    jtj, jtr, _ = reference_products(problem, model, points)
    torch.testing.assert_close(whole.jtj, jtj, **TOLERANCE)
    torch.testing.assert_close(chunked.jtj, jtj, **TOLERANCE)
    torch.testing.assert_close(chunked.jtr, jtr, **TOLERANCE)


@pytest.mark.parametrize("rows_per_cell", [1, 5, 50, 10_000])
def test_blockwise_gram_equals_the_dense_product(rows_per_cell):
    model = KAN([2, 4, 1], grid_size=10, order=3, seed=0).double()
    x = torch.rand(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    index = ParameterIndex(list(model.parameters()))
    with recording() as tape:
        jet = model.forward_jet(x)
        residual = jet.second.sum(dim=1)[:, 0] + jet.value[:, 0] ** 3
    rows = structured_rows(residual, tape.records, index)
    torch.testing.assert_close(rows, generic_rows(residual, index), **TOLERANCE)
    assert 0.1 < float((rows != 0).double().mean()) < 0.6  # a KAN row touches few coefficients
    keys = cell_keys(x, (-1, -1), (1, 1), rows_per_cell)
    torch.testing.assert_close(gram(rows, keys), torch.triu(rows.T @ rows), **TOLERANCE)  # the upper triangle
    torch.testing.assert_close(symmetric(gram(rows)), rows.T @ rows, **TOLERANCE)


def poisson_after_a_trial():
    """A Poisson objective whose structured path is verified (so trials keep their forward pass), after one
    trial: (problem, model, points, objective, index)."""
    problem = KANPaperPoisson()
    model = kan(2, 1, problem.domain)
    points = points_for(problem)
    objective = LeastSquares(problem, model, points)
    index = ParameterIndex(list(model.parameters()))
    objective.gauss_newton(index)
    objective.trial_loss(index)
    return problem, model, points, objective, index


def test_a_kept_trial_is_reused_only_at_the_same_parameters_and_points():
    problem, model, points, objective, index = poisson_after_a_trial()
    loss = objective.trial_loss(index)
    assert loss == pytest.approx(objective.loss(), rel=1e-12)
    assert set(objective._kept) == {"interior", "boundary"}
    reused = objective.gauss_newton(index)
    torch.testing.assert_close(reused.jtj, reference_products(problem, model, points)[0], **TOLERANCE)
    objective.trial_loss(index)
    index.add_(torch.full((index.size,), 1e-3, dtype=torch.float64))  # a rejected trial's restore, say
    moved = objective.gauss_newton(index)
    torch.testing.assert_close(moved.jtj, reference_products(problem, model, points)[0], **TOLERANCE)
    objective.trial_loss(index)
    points["interior"] = points["interior"][:30].clone()  # resampled points
    resampled = objective.gauss_newton(index)
    torch.testing.assert_close(resampled.jtr, reference_products(problem, model, points)[1], **TOLERANCE)


class Columns(KANPaperPoisson):
    """A residual shaped (N, 1): the broadcasting slip a user makes."""

    def residual(self, x, d):
        return (d["u_xx"] + d["u_yy"]).unsqueeze(-1)


def test_a_residual_that_is_not_one_entry_per_point_is_refused_with_the_fix():
    problem = Columns()
    model = kan(2, 1, problem.domain)
    objective = LeastSquares(problem, model, points_for(problem))
    with pytest.raises(ValueError, match=r"loss term 'pde' returned shape \(6, 1\) at 6 points; a residual has one"):
        objective.gauss_newton(ParameterIndex(list(model.parameters())))


def test_history_terms_come_from_the_accepted_trial_only_while_nothing_changed():
    _, _, _, objective, index = poisson_after_a_trial()
    fresh = objective.loss_terms()
    cached = objective.current_terms()
    assert cached.keys() == fresh.keys()
    assert all(cached[k] == pytest.approx(fresh[k], rel=1e-12) for k in fresh)
    index.add_(torch.full((index.size,), 1e-3, dtype=torch.float64))
    moved = objective.current_terms()
    assert all(moved[k] == pytest.approx(v, rel=1e-12) for k, v in objective.loss_terms().items())
    assert moved["pde"] != pytest.approx(cached["pde"], rel=1e-6)


def test_jacobian_by_columns_equals_rows_for_few_parameters(monkeypatch):
    """The column-by-column generic Jacobian (double backward) equals the row-by-row one, on a residual
    with mixed derivatives through autograd; and LeastSquares picks it for a model with few parameters."""
    from kanpde.formula import FormulaKAN
    from kanpde.jacobian import generic_columns
    from kanpde.symbolic import Candidate

    problem = Mixed()
    edge = lambda name, a, b, c: Candidate(name, a, b, c, 0.1, 1.0, 1.0)  # noqa: E731
    formula = FormulaKAN([2, 2, 1], [[[edge("sin", 1.3, 0.2, 0.7), edge("x", 1.0, 0.0, -0.4)],
                                      [edge("x^2", 1.0, 0.3, 0.5), edge("exp", 0.6, 0.0, 0.2)]],
                                     [[edge("cos", 0.9, -0.1, 1.1)], [edge("tanh", 1.2, 0.3, 0.8)]]])
    points = points_for(problem)
    points["interior"].requires_grad_(True)
    index = ParameterIndex(list(formula.parameters()))
    fields = _fields_factory(problem, formula, "forward", None)(points["interior"])
    (_, residual), = _named(problem.residual(points["interior"], fields), "pde")
    torch.testing.assert_close(generic_columns(residual, index), generic_rows(residual, index), **TOLERANCE)
    objective = LeastSquares(problem, formula, points, input_grad=("interior",))

    def row_by_row(*args, **kwargs):
        raise AssertionError("a model with few parameters must take the column path")

    monkeypatch.setattr("kanpde.objective.generic_rows", row_by_row)
    products = objective.gauss_newton(index)
    jtj, jtr, loss = reference_products(problem, formula, points)
    torch.testing.assert_close(products.jtj, jtj, **TOLERANCE)
    torch.testing.assert_close(products.jtr, jtr, **TOLERANCE)
    assert products.loss == pytest.approx(loss, rel=1e-12)
