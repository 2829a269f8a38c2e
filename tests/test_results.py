"""Tests of kanpde.results: checkpoints round-trip exactly, load with weights_only, and run folders."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from kanpde.nn import KAN, MLP
from kanpde.problems.poisson import KANPaperPoisson
from kanpde.results import CHECKPOINT, environment, load_checkpoint, save_checkpoint, write_history, write_run
from kanpde.sampling import evaluation_grid
from kanpde.training import Evaluation, Result

DOMAIN = [(-1.0, 1.0), (0.0, 2.0)]


def test_points(n: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, generator=generator, dtype=torch.float64) * torch.tensor([2.0, 2.0]) + torch.tensor([-1.0, 0.0])


test_points.__test__ = False  # a helper, not a test


def extended_kan(adaptive: float = 0.0) -> KAN:
    """A [2, 4, 1] KAN built on grid 3 and extended to grid 7: its grid size differs from the default (5)."""
    model = KAN([2, 4, 1], grid_size=3, grid_range=DOMAIN, noise_scale=0.5, seed=1).to(torch.float64)
    model = model.extend_grid(7, test_points(200, seed=2), adaptive=adaptive)
    assert model.grid_size == 7
    return model


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every parameter so a fresh constructor cannot reproduce the weights by chance."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64).to(parameter.dtype))
    return model


MODELS = {
    "kan_extended": lambda: trained_like(extended_kan()),
    "kan_extended_adaptive": lambda: trained_like(extended_kan(adaptive=0.5)),
    "kan_float32": lambda: trained_like(KAN([2, 3, 2], grid_size=4, grid_range=DOMAIN, seed=0)),
    "mlp_tanh": lambda: trained_like(MLP([2, 6, 6, 1], activation="tanh", input_range=DOMAIN).to(torch.float64)),
    "mlp_sin": lambda: trained_like(MLP([2, 5, 3], activation="sin", input_range=DOMAIN).to(torch.float64)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_checkpoint_round_trip_gives_identical_predictions(tmp_path, name):
    model = MODELS[name]()
    dtype = next(model.parameters()).dtype
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, status="completed", step=42, note="round trip")
    loaded, meta = load_checkpoint(path)
    assert type(loaded) is type(model)
    assert meta == {"status": "completed", "step": 42, "note": "round trip"}
    assert next(loaded.parameters()).dtype == dtype
    x = test_points().to(dtype)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # derivatives (the fast path, which depends on the uniform-grid flag) agree as well
    jet, reference = loaded.forward_jet(x), model.forward_jet(x)
    for part in ("value", "first", "second"):
        torch.testing.assert_close(getattr(jet, part).detach(), getattr(reference, part).detach(), rtol=0, atol=0)
    if isinstance(model, KAN):
        assert loaded.grid_size == model.grid_size
        assert [layer.uniform for layer in loaded.layers] == [layer.uniform for layer in model.layers]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / "kan.pt"
    save_checkpoint(path, extended_kan(), status="running", step=3)
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"model_spec", "state_dict", "meta"}
    assert payload["model_spec"]["family"] == "kan" and payload["model_spec"]["grid_size"] == 7
    assert payload["meta"] == {"status": "running", "step": 3}
    assert not list(tmp_path.glob("*.tmp")), "the temporary file must be renamed away"


def test_checkpoint_overwrite_is_atomic_and_replaces(tmp_path):
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, extended_kan(), step=1)
    save_checkpoint(path, MLP([2, 3, 1]), step=2)
    loaded, meta = load_checkpoint(path)
    assert isinstance(loaded, MLP) and meta["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]


def test_save_unknown_model_type_raises(tmp_path):
    with pytest.raises(TypeError, match=r"no spec for Linear; kanpde checkpoints hold KAN or MLP models"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 1))
    assert not list(tmp_path.iterdir()), "a failed save leaves no file behind"


def test_load_rejects_pickled_objects(tmp_path):
    """weights_only=True: a checkpoint carrying arbitrary Python objects is refused, not executed."""

    path = tmp_path / "evil.pt"
    torch.save({"model_spec": {"family": "kan"}, "state_dict": {}, "meta": {}, "payload": Result}, path)
    with pytest.raises(Exception, match=r"[Ww]eights only load failed|Unsupported global"):
        load_checkpoint(path)


def test_load_rejects_unknown_family(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"model_spec": {"family": "transformer"}, "state_dict": {"w": torch.zeros(1)}, "meta": {}}, path)
    with pytest.raises(ValueError, match=r"unknown model family 'transformer' in checkpoint; expected 'kan' or 'mlp'"):
        load_checkpoint(path)


# -------------------------------------------------------------------------------------- run folders


def test_write_run_writes_every_file_and_clean_json(tmp_path):
    problem = KANPaperPoisson()
    model = KAN([2, 3, 1], grid_size=4, grid_range=problem.domain.ranges).to(torch.float64)
    points = evaluation_grid(problem.domain, 9)
    evaluation = Evaluation(points, problem.exact(points))
    history = [{"step": 0, "stage": 0, "loss": 1.0, "loss_pde": 0.5, "rel_l2": 1.0},
               {"step": 1, "stage": 0, "loss": 0.5, "loss_pde": 0.25, "rel_l2": 0.9, "extra": 3}]
    metrics = {"status": "completed", "steps": 1, "rel_l2": 0.9, "mse": 0.1, "max_abs": 0.5, "final_loss": math.nan,
               "parameters": 10, "wall_time": 0.1, "train_time": 0.05}
    written = write_run(tmp_path, Result(model, "completed", metrics, history), problem, evaluation,
                        {"dtype": "float64", "seed": 0})
    names = {p.name for p in tmp_path.iterdir()}
    assert {"metrics.json", "history.csv", CHECKPOINT, "prediction.npz", "prediction.png", "reference.png",
            "error.png", "history.png"} <= names
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text
    on_disk = json.loads(text)
    assert on_disk == written and on_disk["final_loss"] is None
    assert on_disk["dtype"] == "float64" and on_disk["environment"]["torch"] == torch.__version__
    assert set(on_disk["files"]) <= names
    header = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert header == ["step", "stage", "loss", "loss_pde", "rel_l2", "extra"]
    data = np.load(tmp_path / "prediction.npz")
    assert data["points"].shape == (81, 2) and data["predicted"].shape == (81, 1)
    np.testing.assert_array_equal(data["reference"], evaluation.values.numpy())
    assert list(data["variables"]) == ["x", "y"]


def test_write_run_without_plots_or_evaluation(tmp_path):
    problem = KANPaperPoisson()
    model = MLP([2, 3, 1]).to(torch.float64)
    write_run(tmp_path, Result(model, "time_limit", {"steps": 0}, []), problem, None, plot=False)
    assert {p.name for p in tmp_path.iterdir()} == {"metrics.json", "history.csv", CHECKPOINT}


def test_write_history_with_no_rows(tmp_path):
    write_history(tmp_path / "h.csv", [])
    assert (tmp_path / "h.csv").read_text().strip() == ""


def test_environment_records_versions():
    env = environment()
    assert {"python", "torch", "numpy", "scipy", "platform", "cpu_count", "torch_threads", "cuda"} <= set(env)
