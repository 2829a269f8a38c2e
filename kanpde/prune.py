"""Reading a KAN's structure: edge and node importance, the sparsity regulariser, and pruning.

Importance follows the KAN paper (Liu et al. 2024, section 2.5.1): an edge matters as much as its function
varies over the inputs it actually sees. Here the score of edge (i -> j) of a layer is the standard deviation
of phi_ij(h_i) over samples, divided by the largest such score in the layer (so thresholds are relative and
scale-free). A hidden node is kept when its largest incoming *and* its largest outgoing score both reach the
threshold: a node that receives nothing, or whose output no later edge uses, does not change the network.

The regulariser is the paper's eq. 2.17-2.20: lambda * (mu_1 sum_l |Phi_l|_1 + mu_2 sum_l S(Phi_l)) with
|phi|_1 the mean |phi(h)| over the batch, |Phi_l|_1 the sum over a layer's edges, and S the entropy of the
normalised edge norms (taken over each node's incoming and outgoing edges, averaged, so that one edge per
node is favoured in both directions).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from kanpde.nn import KAN


def edge_activations(model: KAN, samples: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, its inputs ``h`` (N, in) and edge outputs ``phi`` (N, in, out) at ``samples`` (N, widths[0])."""
    _check_kan(model, "edge activations")
    layers, h = [], samples
    for layer in model.layers:
        phi = layer.edge_functions(h, n_derivatives=0)[0]  # (N, in, out)
        layers.append((h, phi))
        h = phi.sum(dim=1)
    return layers


@torch.no_grad()
def edge_scores(model: KAN, samples: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, the relative importance of each edge: ``(in, out)`` tensors with largest entry 1."""
    scores = []
    for _, phi in edge_activations(model, samples):
        spread = phi.std(dim=0) if len(phi) > 1 else phi.abs()[0]  # (in, out)
        scores.append(spread / spread.max().clamp(min=torch.finfo(spread.dtype).tiny))
    return scores


def node_scores(scores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per hidden layer, each node's importance: the smaller of its largest incoming and outgoing edge scores."""
    return [torch.minimum(incoming.amax(dim=0), outgoing.amax(dim=1))
            for incoming, outgoing in zip(scores[:-1], scores[1:])]


def sparsity_penalty(model: KAN, samples: torch.Tensor, l1: float = 1.0, entropy: float = 2.0) -> torch.Tensor:
    """The KAN paper's sparsity regulariser at ``samples`` (N, widths[0]), a scalar with a graph (multiply by
    lambda and add to the loss). ``l1`` and ``entropy`` are the paper's mu_1 and mu_2 (pykan's defaults)."""
    total = samples.new_zeros(())
    for _, phi in edge_activations(model, samples):
        norms = phi.abs().mean(dim=0)  # (in, out): |phi|_1 per edge
        total = total + l1 * norms.sum()
        if entropy:
            total = total + entropy * 0.5 * (_entropy(norms, dim=1) + _entropy(norms, dim=0))
    return total


def _entropy(norms: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean over nodes of the entropy of the normalised edge norms along ``dim``."""
    p = norms / norms.sum(dim=dim, keepdim=True).clamp(min=1e-30)
    return -(p * torch.log(p.clamp(min=1e-30))).sum(dim=dim).mean()


@torch.no_grad()
def prune(model: KAN, samples: torch.Tensor, threshold: float = 0.05, keep: int | None = None) -> KAN:
    """A smaller KAN without the hidden nodes whose :func:`node_scores` fall below ``threshold``.

    Args:
        model: the KAN to prune (left unchanged).
        samples: points (N, widths[0]) at which importance is measured, e.g. the collocation points.
        threshold: relative importance in (0, 1) a hidden node needs to stay.
        keep: instead of a threshold, keep this many most important nodes per hidden layer.

    Every hidden layer keeps at least one node. Edges into and out of the removed nodes are dropped, and
    the remaining edges are exactly the old ones, so the output changes only by what the removed nodes
    contributed.
    """
    _check_kan(model, "pruning")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"prune threshold must lie in (0, 1) (relative importance), got {threshold!r}")
    if keep is not None and (int(keep) != keep or keep < 1):
        raise ValueError(f"keep must be an integer >= 1 (nodes per hidden layer) or None, got {keep!r}")
    scores = node_scores(edge_scores(model, samples))
    kept = [torch.arange(model.widths[0])]
    for score in scores:
        if keep is not None:
            chosen = torch.argsort(score, descending=True)[: int(keep)].sort().values
        else:
            chosen = torch.nonzero(score >= threshold).flatten()
            if len(chosen) == 0:
                chosen = score.argmax().reshape(1)
        kept.append(chosen.cpu())
    kept.append(torch.arange(model.widths[-1]))
    return select_nodes(model, kept)


@torch.no_grad()
def select_nodes(model: KAN, nodes: Sequence[torch.Tensor]) -> KAN:
    """The sub-network of ``model`` on the given node indices, one index tensor per layer of nodes (the
    first and last usually all of them). Layer parameters are shaped (in, out, ...) and layer buffers
    (the knots) (in, ...); both are sliced, so this holds for any edge basis that keeps that layout."""
    _check_kan(model, "node selection")
    if len(nodes) != len(model.widths):
        raise ValueError(f"give one index tensor per layer of nodes ({len(model.widths)}), got {len(nodes)}")
    smaller = copy.deepcopy(model)
    for layer, into, out in zip(smaller.layers, nodes[:-1], nodes[1:]):
        into, out = into.to(layer.coef.device), out.to(layer.coef.device)
        for name, parameter in list(layer.named_parameters(recurse=False)):
            setattr(layer, name, torch.nn.Parameter(parameter[into][:, out].clone()))
        for name, buffer in list(layer.named_buffers(recurse=False)):
            layer.register_buffer(name, buffer[into].clone())
        layer.n_in, layer.n_out = len(into), len(out)
    smaller.widths = [len(index) for index in nodes]
    return smaller


def _check_kan(model, what: str) -> None:
    if not isinstance(model, KAN):
        raise TypeError(f"{what} needs a KAN, got {type(model).__name__}: MLP weights are not edge functions")
