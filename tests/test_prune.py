"""Edge and node importance, the sparsity regulariser, pruning, and the schedule's sparsity and prune stages."""

from __future__ import annotations

import functools

import pytest
import torch

from kanpde import KAN, MLP, LevenbergMarquardt, Sampler, Stage, train
from kanpde.prune import edge_activations, edge_scores, node_scores, prune, select_nodes, sparsity_penalty
from kanpde.problems.poisson import SinSinPoisson


def kan_with_dead_nodes(dead=(1, 3)) -> KAN:
    """A KAN [2, 5, 1] whose hidden nodes ``dead`` feed nothing forward (their output edges are zero)."""
    model = KAN([2, 5, 1], grid_size=4, order=3, seed=2).double()
    with torch.no_grad():
        last = model.layers[1]
        for node in dead:
            last.coef[node].zero_()
            last.scale_base[node].zero_()
    return model


def samples(n: int = 300) -> torch.Tensor:
    return torch.rand(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1


def test_scores_are_relative_and_find_dead_nodes():
    model = kan_with_dead_nodes()
    scores = edge_scores(model, samples())
    assert [s.shape for s in scores] == [(2, 5), (5, 1)]
    assert all(float(s.max()) == pytest.approx(1.0) for s in scores)
    nodes = node_scores(scores)[0]
    assert torch.all(nodes[[1, 3]] == 0) and torch.all(nodes[[0, 2, 4]] > 0.01)


def test_pruning_removes_dead_nodes_and_keeps_the_output():
    model, x = kan_with_dead_nodes(), samples()
    smaller = prune(model, x, threshold=0.01)
    assert smaller.widths == [2, 3, 1]
    assert model.widths == [2, 5, 1]  # the original is left alone
    torch.testing.assert_close(smaller(x), model(x), rtol=0, atol=1e-13)
    torch.testing.assert_close(smaller.forward_jet(x).second, model.forward_jet(x).second, rtol=0, atol=1e-12)
    assert smaller.count_parameters() == sum(p.numel() for p in smaller.parameters())


def test_pruning_by_count_keeps_the_most_important_nodes():
    model, x = kan_with_dead_nodes(dead=()), samples()
    importance = node_scores(edge_scores(model, x))[0]
    smaller = prune(model, x, keep=2)
    assert smaller.widths == [2, 2, 1]
    kept = torch.argsort(importance, descending=True)[:2].sort().values
    torch.testing.assert_close(smaller.layers[0].coef, model.layers[0].coef[:, kept])
    torch.testing.assert_close(smaller.layers[1].coef, model.layers[1].coef[kept])


def test_select_nodes_checks_its_input_and_keeps_one_node_at_least():
    model, x = kan_with_dead_nodes(dead=(0, 1, 2, 3, 4)), samples()
    assert prune(model, x, threshold=0.5).widths == [2, 1, 1]
    with pytest.raises(ValueError, match="one index tensor per layer"):
        select_nodes(model, [torch.arange(2), torch.arange(1)])
    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\)"):
        prune(model, x, threshold=1.5)
    with pytest.raises(ValueError, match="keep must be an integer >= 1"):
        prune(model, x, keep=0)
    with pytest.raises(TypeError, match="needs a KAN, got MLP"):
        prune(MLP([2, 4, 1]).double(), x)


def test_sparsity_penalty_is_the_papers_l1_plus_entropy():
    model, x = kan_with_dead_nodes(dead=()), samples()
    expected = 0.0
    for _, phi in edge_activations(model, x):
        norms = phi.abs().mean(dim=0)  # (in, out)
        rows = norms / norms.sum(dim=1, keepdim=True)
        cols = norms / norms.sum(dim=0, keepdim=True)
        entropy = 0.5 * (-(rows * rows.log()).sum(dim=1).mean() - (cols * cols.log()).sum(dim=0).mean())
        expected = expected + norms.sum() + 2.0 * entropy
    penalty = sparsity_penalty(model, x)
    torch.testing.assert_close(penalty, expected, rtol=1e-12, atol=0)
    penalty.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def small_problem():
    problem = SinSinPoisson()
    sampler = Sampler("sobol", n_interior=128, n_boundary=64, seed=0)
    lbfgs = functools.partial(torch.optim.LBFGS, lr=1.0, max_iter=5, history_size=20, line_search_fn="strong_wolfe")
    return problem, sampler, {"lbfgs": lbfgs, "lm": functools.partial(LevenbergMarquardt)}


def test_a_sparsity_stage_lowers_the_penalty_and_a_prune_stage_shrinks_the_kan():
    problem, sampler, optimizers = small_problem()
    x = samples()
    plain = train(problem, KAN([2, 6, 1], grid_size=4, seed=0).double(), [Stage("lbfgs", 15)], optimizers, sampler,
                  grid_update=None, progress=False).model
    sparse = train(problem, KAN([2, 6, 1], grid_size=4, seed=0).double(), [Stage("lbfgs", 15, sparsity=0.05)],
                   optimizers, sampler, grid_update=None, progress=False).model
    with torch.no_grad():
        assert float(sparsity_penalty(sparse, x)) < 0.8 * float(sparsity_penalty(plain, x))
    result = train(problem, sparse, [Stage("lm", 3, prune=0.2)], optimizers, sampler, grid_update=None, progress=False)
    expected = prune(sparse, torch.cat([v for v in _points(problem, sampler).values()]), 0.2).widths
    assert result.model.widths == expected and expected[1] < 6
    assert result.metrics["parameters"] == result.model.count_parameters()


def _points(problem, sampler):
    from kanpde.training import collocation

    return {k: v.double() for k, v in collocation(problem, sampler).items()}


def test_bad_stage_settings_are_refused():
    problem, sampler, optimizers = small_problem()
    with pytest.raises(ValueError, match="sparsity must be a number >= 0"):
        Stage("lbfgs", 5, sparsity=-1.0)
    with pytest.raises(ValueError, match=r"prune must lie in \(0, 1\)"):
        Stage("lbfgs", 5, prune=2.0)
    with pytest.raises(ValueError, match="sparsity needs a first-order optimizer"):
        train(problem, KAN([2, 3, 1]).double(), [Stage("lm", 2, sparsity=0.1)], optimizers, sampler, progress=False)
    with pytest.raises(ValueError, match="act on KAN edges; this model is a MLP"):
        train(problem, MLP([2, 4, 1]).double(), [Stage("lbfgs", 2, prune=0.1)], optimizers, sampler, progress=False)
