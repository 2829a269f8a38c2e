"""kanpde.metrics: combined errors as before, per-output errors for several outputs, clear errors on bad input."""

from __future__ import annotations

import pytest
import torch

from kanpde.metrics import errors
from kanpde.training import Evaluation


def test_one_output_keeps_the_three_combined_keys():
    values = torch.tensor([[1.0], [2.0], [-2.0]], dtype=torch.float64)
    predicted = values + torch.tensor([[0.0], [0.3], [-0.4]], dtype=torch.float64)
    result = errors(predicted, values)
    assert set(result) == {"rel_l2", "mse", "max_abs"}
    assert result["rel_l2"] == pytest.approx(0.5 / 3.0, rel=1e-14)
    assert result["mse"] == pytest.approx(0.25 / 3, rel=1e-14)
    assert result["max_abs"] == pytest.approx(0.4, rel=1e-14)


def test_several_outputs_add_each_outputs_errors_by_name():
    values = torch.tensor([[3.0, 0.0, 1.0], [4.0, 1.0, 1.0]], dtype=torch.float64)  # ||u|| = 5, ||v|| = 1
    diff = torch.tensor([[0.0, 0.1, 0.0], [5e-3, 0.0, -0.2]], dtype=torch.float64)
    result = errors(values + diff, values, ("u", "v", "p"))
    assert result["rel_l2_u"] == pytest.approx(1e-3, rel=1e-12)
    assert result["rel_l2_v"] == pytest.approx(0.1, rel=1e-12)  # a small field's error is not hidden by u's norm
    assert result["rel_l2_p"] == pytest.approx(0.2 / 2**0.5, rel=1e-12)
    assert result["max_abs_p"] == pytest.approx(0.2) and result["mse_v"] == pytest.approx(0.01 / 2)
    assert result["rel_l2"] == pytest.approx(float(diff.norm() / values.norm()), rel=1e-14)  # unchanged meaning
    assert result["max_abs"] == pytest.approx(0.2)
    assert set(errors(values + diff, values)) >= {"rel_l2_output0", "rel_l2_output2"}  # unnamed columns


def test_evaluation_passes_its_output_names():
    points = torch.linspace(0, 1, 5, dtype=torch.float64).unsqueeze(-1)
    values = torch.cat([points, 2 * points + 1], dim=1)
    model = torch.nn.Linear(1, 2).to(torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0], [2.0]]))
        model.bias.copy_(torch.tensor([0.0, 1.5]))
    result = Evaluation(points, values, ("a", "b")).errors(model)
    assert result["rel_l2_a"] == 0.0 and result["max_abs_b"] == pytest.approx(0.5)


@pytest.mark.parametrize("predicted, names, match", [
    (torch.zeros(4, 2), ("u", "v", "p"), "must have the same shape"),
    (torch.zeros(4, 3), ("u", "v"), "2 output names .* for true values with 3 columns"),
])
def test_bad_input(predicted, names, match):
    with pytest.raises(ValueError, match=match):
        errors(predicted, torch.ones(4, 3), names)


def test_evaluation_refuses_names_that_do_not_match_its_columns():
    with pytest.raises(ValueError, match="2 output names .* for values with 3 columns"):
        Evaluation(torch.zeros(4, 2), torch.zeros(4, 3), ("u", "v"))
