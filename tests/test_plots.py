"""kanpde.plots.solution_plots: one figure set per output (plain names for one output, suffixed for several)."""

from __future__ import annotations

import numpy as np

from kanpde import plots


def grid(n=9):
    x, t = np.meshgrid(np.linspace(-1, 1, n), np.linspace(0, 1, n), indexing="ij")
    return np.stack([x.ravel(), t.ravel()], axis=1)  # (n^2, 2)


def test_several_outputs_of_an_x_t_problem_get_a_figure_and_slices_each(tmp_path):
    points = grid()
    reference = np.stack([np.sin(np.pi * points[:, 0]) * np.exp(-points[:, 1]), points[:, 0] * points[:, 1]], axis=1)
    written = plots.solution_plots(tmp_path, points, reference + 1e-3, reference, ("x", "t"), ("u", "w"))
    assert written == ["solution_u.png", "slices_u.png", "solution_w.png", "slices_w.png"]
    for name in written:
        assert (tmp_path / name).stat().st_size > 10_000
    assert not (tmp_path / "prediction.png").exists()


def test_three_variables_draw_no_field(tmp_path):
    points = np.random.default_rng(0).uniform(size=(20, 3))
    assert plots.solution_plots(tmp_path, points, points[:, :1], points[:, :1], ("x", "y", "t"), ("u",)) == []
