"""Figures of a run: solution, reference, pointwise error and training history (PNG files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _field(ax, points: np.ndarray, values: np.ndarray, names, title: str, cmap: str = "viridis"):
    """One scalar field over 1 or 2 variables (scattered points are triangulated)."""
    if points.shape[1] == 1:
        order = np.argsort(points[:, 0])
        ax.plot(points[order, 0], values[order])
        ax.set_xlabel(names[0])
    else:
        image = ax.tripcolor(points[:, 0], points[:, 1], values, shading="gouraud", cmap=cmap)
        plt.colorbar(image, ax=ax)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_aspect("auto")
    ax.set_title(title)


def solution_plots(folder: Path, points: np.ndarray, predicted: np.ndarray, reference: np.ndarray | None,
                   variables, outputs) -> list[str]:
    """Figures of the solution over the first two variables; ``predicted`` and ``reference`` are (N, n_outputs)
    at ``points`` (N, n_vars).

    One output: prediction.png, reference.png and error.png (and slices.png for (x, t) problems). Several outputs:
    one figure per output, ``solution_<name>.png``, with the model, the reference and the pointwise error side by
    side (and ``slices_<name>.png`` for (x, t) problems).
    """
    if points.shape[1] > 2:
        return []
    written = []
    for column, output in enumerate(outputs):
        panels = [("prediction", predicted[:, column], "viridis", f"{output} (model)")]
        if reference is not None:
            error = np.abs(predicted[:, column] - reference[:, column])
            panels += [("reference", reference[:, column], "viridis", f"{output} (reference)"),
                       ("error", error, "magma", f"|{output} - reference|, max {error.max():.2e}")]
        if len(outputs) == 1:
            for name, values, cmap, title in panels:
                fig, ax = plt.subplots(figsize=(5.2, 4.2))
                _field(ax, points, values, variables, title, cmap)
                written.append(_save(fig, folder, f"{name}.png"))
        else:
            fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
            for ax, (_, values, cmap, title) in zip(axes[0], panels):
                _field(ax, points, values, variables, title, cmap)
            written.append(_save(fig, folder, f"solution_{output}.png"))
        if "t" in variables and points.shape[1] == 2 and reference is not None:
            filename = "slices.png" if len(outputs) == 1 else f"slices_{output}.png"
            written.append(_time_slices(folder, points, predicted[:, column], reference[:, column], variables,
                                        output, filename))
    return written


def _save(fig, folder: Path, filename: str) -> str:
    fig.tight_layout()
    fig.savefig(folder / filename, dpi=110)
    plt.close(fig)
    return filename


def _time_slices(folder: Path, points, predicted, reference, variables, output, filename: str = "slices.png") -> str:
    """u(x, t) at a few times: model (lines) against reference (dashed)."""
    t_index = list(variables).index("t")
    x_index = 1 - t_index
    times = np.unique(points[:, t_index])
    chosen = times[np.linspace(0, len(times) - 1, 4).round().astype(int)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for t in chosen:
        on = np.isclose(points[:, t_index], t)
        order = np.argsort(points[on, x_index])
        line, = ax.plot(points[on, x_index][order], predicted[on][order], label=f"t = {t:.2f}")
        ax.plot(points[on, x_index][order], reference[on][order], "--", color=line.get_color())
    ax.set_xlabel(variables[x_index])
    ax.set_ylabel(output)
    ax.legend()
    ax.set_title("time slices: model (solid), reference (dashed)")
    fig.tight_layout()
    fig.savefig(folder / filename, dpi=110)
    plt.close(fig)
    return filename


def history_plot(folder: Path, history: list[dict]) -> str | None:
    """history.png: loss terms and errors against step."""
    if not history:
        return None
    steps = np.array([row["step"] for row in history])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key in history[0]:
        if key == "loss" or key.startswith("loss_"):
            axes[0].semilogy(steps, [row[key] for row in history], label=key)
    axes[0].set_xlabel("step")
    axes[0].set_title("loss")
    axes[0].legend(fontsize=8)
    per_output = list(dict.fromkeys(key for row in history for key in row if key.startswith("rel_l2_")))  # each output's
    for key in ("rel_l2", "mse", *per_output):
        measured = [row for row in history if row.get(key) is not None]  # rows between measurements have none
        if measured:
            axes[1].semilogy([row["step"] for row in measured], [row[key] for row in measured], label=key)
    stage_starts = [row["step"] for prev, row in zip(history, history[1:]) if row["stage"] != prev["stage"]]
    for ax in axes:
        for step in stage_starts:
            ax.axvline(step, color="grey", lw=0.6, ls=":")
    axes[1].set_xlabel("step")
    axes[1].set_title("error against the solution (dotted: grid extension)")
    if axes[1].lines:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "history.png", dpi=110)
    plt.close(fig)
    return "history.png"


def unknowns_plot(folder: Path, history: list[dict], unknowns: dict[str, dict]) -> str | None:
    """unknowns.png: each unknown coefficient against step; its relative error too when the true value is known."""
    if not history or not unknowns:
        return None
    steps = np.array([row["step"] for row in history])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, report in unknowns.items():
        values = np.array([row.get(name, np.nan) for row in history], dtype=float)
        line, = axes[0].plot(steps, values, label=name)
        if "true" in report:
            axes[0].axhline(report["true"], color=line.get_color(), lw=0.8, ls="--")
            error = np.abs(values - report["true"]) / max(abs(report["true"]), 1e-300)
            axes[1].semilogy(steps, np.maximum(error, 1e-16), color=line.get_color(), label=name)
    axes[0].set_xlabel("step")
    axes[0].set_title("unknown coefficients (dashed: true values)")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("step")
    axes[1].set_title("relative error of each unknown")
    if axes[1].lines:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "unknowns.png", dpi=110)
    plt.close(fig)
    return "unknowns.png"


def network_diagram(path: Path, activations, scores, input_names, output_names, labels=None) -> str:
    """A KAN drawn as its edge functions: one small plot per edge, placed between the nodes it joins, with
    opacity by importance.

    Args:
        activations: per layer, (h (N, in), phi (N, in, out)) arrays: each edge's inputs and outputs.
        scores: per layer, (in, out) relative importances in [0, 1].
        labels: optional per layer (in, out) nested lists of short texts (e.g. the chosen function).
    """
    widths = [activations[0][0].shape[1]] + [phi.shape[2] for _, phi in activations]
    n_layers = len(activations)
    column = max(widths)
    fig = plt.figure(figsize=(max(4.0, 1.3 * column * max(w_in * w_out for w_in, w_out in zip(widths, widths[1:]))
                                  ** 0.5), 2.6 * n_layers + 0.6))
    base = fig.add_axes([0, 0, 1, 1])
    base.set_xlim(0, 1)
    base.set_ylim(0, 1)
    base.axis("off")

    def node_x(layer: int, node: int) -> float:
        return (node + 0.5) / widths[layer]

    def node_y(layer: int) -> float:
        return 0.04 + 0.92 * layer / n_layers

    for layer, ((h, phi), score) in enumerate(zip(activations, scores)):
        n_in, n_out = phi.shape[1], phi.shape[2]
        box = min(0.8 / (n_in * n_out), 0.28)  # edge-plot size, in figure fractions
        for i in range(n_in):
            for j in range(n_out):
                alpha = float(np.clip(score[i, j], 0.05, 1.0))
                x0, y0, x1, y1 = node_x(layer, i), node_y(layer), node_x(layer + 1, j), node_y(layer + 1)
                cx, cy = (i * n_out + j + 0.5) / (n_in * n_out), 0.5 * (y0 + y1)  # edges side by side
                base.plot([x0, cx], [y0, cy - 0.09], color="black", alpha=alpha, lw=0.8)  # input node -> plot
                base.plot([cx, x1], [cy + 0.09, y1], color="black", alpha=alpha, lw=0.8)  # plot -> output node
                inset = fig.add_axes([cx - box / 2, cy - 0.09, box, 0.18])
                order = np.argsort(h[:, i])
                inset.plot(h[order, i], phi[order, i, j], color="tab:blue", alpha=alpha)
                inset.set_xticks([])
                inset.set_yticks([])
                for spine in inset.spines.values():
                    spine.set_alpha(alpha)
                title = f"{layer}.{i}.{j}" + (f" {labels[layer][i][j]}" if labels else "")
                inset.set_title(title, fontsize=7, alpha=max(alpha, 0.4))
    for layer, width in enumerate(widths):
        names = input_names if layer == 0 else output_names if layer == n_layers else [""] * width
        for node in range(width):
            base.scatter([node_x(layer, node)], [node_y(layer)], s=40, color="black", zorder=3)
            if names[node]:
                base.text(node_x(layer, node) + 0.01, node_y(layer) - 0.02, names[node], fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path).name
