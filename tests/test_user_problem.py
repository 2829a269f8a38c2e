"""The user's contract end to end: a problem defined in a fresh folder, outside the repository, is solved and
listed by ``python -m kanpde`` run in that folder; and the built-in Helmholtz problem, written the same way,
holds to its own declaration.

The files written below are the ones the README's "Define your own PDE" shows (kept in step by
``test_the_docs_show_these_files``).
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path

import pytest
import torch

from kanpde.training import collocation, loss_terms
from kanpde.sampling import Sampler
from kanpde.validation import validate

ROOT = Path(__file__).resolve().parents[1]

MY_PDE = textwrap.dedent('''\
    """My first kanpde problem: steady reaction-diffusion on the unit square."""

    import math

    import torch

    from kanpde import Box, Problem, dirichlet, neumann

    PI = math.pi


    class MyPDE(Problem):
        r"""Reaction-diffusion with a manufactured solution.

        -(u_xx + u_yy) + c u = f on [0, 1]^2,
        u = 0 on x = 0, x = 1 and y = 0,   du/dn = 0 on y = 1,

        with f = (5 pi^2 / 4 + c) u and exact solution u = sin(pi x) sin(pi y / 2).
        """

        variables = ("x", "y")
        outputs = ("u",)
        description = "reaction-diffusion -laplacian(u) + c u = f on [0,1]^2, u = sin(pi x) sin(pi y / 2)"

        def __init__(self, c: float = 1.0, residual_weight: float = 0.01, boundary_weight: float = 1.0):
            if not (math.isfinite(c) and c >= 0):
                raise ValueError(f"the reaction rate c must be a finite number >= 0, got {c!r}")
            self.c = float(c)
            self.residual_weight = float(residual_weight)
            self.boundary_weight = float(boundary_weight)
            self.domain = Box(self.variables, lower=(0.0, 0.0), upper=(1.0, 1.0))

        def exact(self, x):
            """u at points x (N, 2): (N, 1)."""
            return (torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1] / 2)).unsqueeze(-1)

        def residual(self, x, d):
            source = (1.25 * PI**2 + self.c) * self.exact(x)[:, 0]  # (N,)
            return -d.laplacian("u") + self.c * d["u"] - source

        def conditions(self):
            return {
                "walls": dirichlet(0.0, on=["x=0", "x=1", "y=0"], weight=self.boundary_weight),
                "top": neumann(0.0, on="y=1", weight=self.boundary_weight),
            }
    ''')

MY_PDE_YAML = textwrap.dedent('''\
    # My reaction-diffusion problem: python -m kanpde solve my_pde
    _target_: problems.my_pde.MyPDE
    c: 1.0                    # reaction rate, >= 0
    residual_weight: 0.01     # loss = 0.01 * interior MSE + boundary MSEs
    boundary_weight: 1.0
    ''')

# A problem that is not under ./problems: _target_ may name any importable class.
ELSEWHERE = textwrap.dedent('''\
    from kanpde import Box, Problem, dirichlet


    class Decay(Problem):
        """u' = -u on [0, 1] with u(0) = 1."""

        variables = ("t",)
        outputs = ("u",)

        def __init__(self):
            self.domain = Box(self.variables, (0.0,), (1.0,))

        def residual(self, x, d):
            return d["u_t"] + d["u"]

        def conditions(self):
            return {"initial": dirichlet(1.0, on="t=0")}
    ''')

# Broadcasting mistake: x[:, 0:1] is (N, 1), so the residual becomes (N, N).
BROKEN = MY_PDE.replace("self.exact(x)[:, 0]  # (N,)", "self.exact(x)  # (N, 1): a bug").replace(
    "class MyPDE", "class Broken")

TINY = ["schedule.stages.0.steps=2", "schedule.stages.1.steps=0", "schedule.stages.2.steps=0",
        "sampler.n_interior=64", "sampler.n_boundary=16", "eval.points_per_side=11", "train.plot=false",
        "model.hidden=[3]"]


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """An empty folder holding only the user's problem module and its yaml (not the repository)."""
    return write(tmp_path / "my_project", {"problems/my_pde.py": MY_PDE, "configs/problem/my_pde.yaml": MY_PDE_YAML})


def test_solve_a_user_problem_from_its_folder(user_folder, cli, find_runs):
    done = cli(["solve", "my_pde", *TINY, "seed=3"], user_folder)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = find_runs(user_folder, "my_pde")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["problem"] == "my_pde" and metrics["status"] == "completed" and metrics["steps"] == 2
    assert metrics["seed"] == 3 and math.isfinite(metrics["rel_l2"])
    assert {"history.csv", "checkpoint.pt", "prediction.npz", "config.yaml"} <= {p.name for p in folder.iterdir()}
    assert "_target_: problems.my_pde.MyPDE" in (folder / "config.yaml").read_text()
    assert "problem checked on 16 probe points: terms pde, walls, top" in done.stdout + done.stderr
    # the user's folder gains nothing but results/ (and Python's bytecode cache)
    assert {p.name for p in user_folder.iterdir()} == {"configs", "problems", "results"}


def test_list_shows_user_problems_with_their_descriptions(user_folder, cli):
    write(user_folder, {"lab/equations.py": ELSEWHERE,
                        "configs/problem/decay.yaml": "_target_: lab.equations.Decay\n"})
    done = cli(["list"], user_folder)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert re.search(r"^my_pde\s+user\s+reaction-diffusion -laplacian\(u\) \+ c u = f", lines["my_pde"])
    assert re.search(r"^decay\s+user\s+u' = -u on \[0, 1\]", lines["decay"])  # the docstring's first line
    assert "built-in" in lines["helmholtz"] and "jaxKAN" in lines["helmholtz"]
    assert "cannot import" not in done.stdout
    assert not (user_folder / "results").exists()


def test_a_user_config_wins_over_a_built_in_of_the_same_name(user_folder, cli, find_runs):
    """./configs/problem/poisson.yaml and ./configs/schedule/default.yaml replace the built-ins of those names."""
    write(user_folder, {"configs/problem/poisson.yaml": MY_PDE_YAML,
                        "configs/schedule/default.yaml": "stages:\n  - {optimizer: lbfgs, steps: 1, grid_size: 4}\n"})
    composed = cli(["solve", "poisson", "--cfg", "job"], user_folder)
    assert composed.returncode == 0, composed.stderr[-3000:]
    assert "_target_: problems.my_pde.MyPDE" in composed.stdout
    assert "steps: 1" in composed.stdout and "steps: 300" not in composed.stdout
    done = cli(["solve", "poisson", "sampler.n_interior=64", "eval.points_per_side=11", "train.plot=false"],
               user_folder)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = find_runs(user_folder, "poisson")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["steps"] == 1 and metrics["grid_size"] == 4
    assert "problems.my_pde.MyPDE" in (folder / "config.yaml").read_text()
    listed = cli(["list"], user_folder).stdout
    assert re.search(r"^poisson\s+user\s+reaction-diffusion", listed, re.MULTILINE)
    # in any other folder the built-in is back
    elsewhere = cli(["solve", "poisson", "--cfg", "job"], user_folder.parent)
    assert "kanpde.problems.poisson.KANPaperPoisson" in elsewhere.stdout


def test_a_broken_user_problem_stops_before_training_with_the_fix(user_folder, cli, find_runs):
    write(user_folder, {"problems/broken.py": BROKEN,
                        "configs/problem/broken.yaml": "_target_: problems.broken.Broken\n"})
    done = cli(["solve", "broken", *TINY], user_folder)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "Broken residual returned shape (16, 16) for N = 16 points; expected (16,)" in output
    assert "Traceback" not in output
    assert not any((folder / "metrics.json").exists() for folder in find_runs(user_folder, "broken"))


def test_the_docs_show_these_files():
    """The README's "Define your own PDE" (kept in docs/define_your_own_pde.md too) shows these files."""
    docs = [ROOT / "docs" / "define_your_own_pde.md", ROOT / "README.md"]
    text = "\n".join(path.read_text() for path in docs if path.is_file())
    assert MY_PDE in text and MY_PDE_YAML in text
    assert "python -m kanpde solve my_pde" in text


# ------------------------------------------------------------------------------ built-in Helmholtz


@pytest.fixture
def helmholtz():
    from kanpde.problems.helmholtz import Helmholtz

    return Helmholtz


class ExactModel(torch.nn.Module):
    """The exact solution dressed as a network (one dummy parameter), for residual checks."""

    def __init__(self, problem):
        super().__init__()
        self.problem = problem
        self.one = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

    def forward(self, x):
        return self.one * self.problem.exact(x)


@pytest.mark.parametrize("a1, a2, k", [(1, 4, 1.0), (2, 3, 0.0), (-1, 1, 5.0)])
def test_helmholtz_exact_solution_zeroes_every_term(helmholtz, a1, a2, k):
    problem = helmholtz(a1=a1, a2=a2, k=k, hard=False)
    points = collocation(problem, Sampler(n_interior=128, n_boundary=64, seed=0))
    terms = loss_terms(problem, ExactModel(problem), points, engine="autograd")
    assert set(terms) == {"pde", "boundary"}
    scale = ((a1**2 + a2**2) * math.pi**2) ** 2
    assert float(terms["pde"].detach()) < 1e-20 * scale and float(terms["boundary"].detach()) < 1e-28


def test_helmholtz_defaults_are_jaxkans_benchmark(helmholtz):
    problem = helmholtz()
    assert (problem.a1, problem.a2, problem.k) == (1, 4, 1.0)
    assert problem.domain.ranges == [(-1.0, 1.0), (-1.0, 1.0)]
    x = torch.tensor([[0.5, 0.125]], dtype=torch.float64)
    torch.testing.assert_close(problem.exact(x), torch.ones(1, 1, dtype=torch.float64))
    torch.testing.assert_close(problem.source(x), torch.tensor([1 - 17 * math.pi**2], dtype=torch.float64))
    report = validate(problem, ExactModel(problem))
    assert report.terms == (("pde",) if problem.hard else ("pde", "boundary")) and not report.used_autograd


def test_helmholtz_hard_ansatz_vanishes_on_the_boundary(helmholtz):
    problem = helmholtz(hard=True)
    assert problem.conditions() == {}
    faces = Sampler(n_boundary=64, seed=0).on_faces(problem.domain, "boundary")  # (64, 2)
    network = torch.randn(len(faces), 1, dtype=torch.float64)
    assert problem.hard_constraint.apply_value(faces, network).abs().max() < 1e-15
    inside = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    assert problem.hard_constraint.apply_value(inside, torch.ones(1, 1, dtype=torch.float64)) > 0.8


@pytest.mark.parametrize("settings, message", [
    ({"a1": 0}, r"a1 must be a non-zero integer"),
    ({"a2": 1.5}, r"a2 must be a non-zero integer"),
    ({"a1": True}, r"a1 must be a non-zero integer"),
    ({"k": -1.0}, r"k must be a finite number >= 0"),
    ({"k": math.inf}, r"k must be a finite number >= 0"),
    ({"k": math.pi / 2 * math.sqrt(2)}, r"k\^2 = 4.9348 is a Dirichlet eigenvalue .* not unique"),
    ({"k": math.pi / 2 * math.sqrt(5)}, r"Dirichlet eigenvalue"),  # m, n = 1, 2
    ({"residual_weight": -1.0}, r"residual_weight must be a finite number >= 0"),
    ({"boundary_weight": math.nan}, r"boundary_weight must be a finite number >= 0"),
])
def test_helmholtz_rejects_bad_parameters(helmholtz, settings, message):
    with pytest.raises(ValueError, match=message):
        helmholtz(**settings)


def test_helmholtz_hard_must_be_a_bool(helmholtz):
    with pytest.raises(TypeError, match="hard must be true or false, got 'yes'"):
        helmholtz(hard="yes")


def test_helmholtz_accepts_k_between_eigenvalues(helmholtz):
    assert helmholtz(k=math.pi / 2 * math.sqrt(3)).k > 0  # m^2 + n^2 = 3 has no solution in m, n >= 1
