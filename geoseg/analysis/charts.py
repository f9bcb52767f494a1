"""Charts of class statistics: bar charts of the areas of :func:`geoseg.analysis.class_areas`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geoseg.arguments import check_flag, check_int, check_path
from geoseg.errors import ConfigError, brief
from geoseg.io.outputs import atomic_path


def plot_class_areas(
    stats: pd.DataFrame,
    path: str | Path | None = None,
    *,
    colors: dict[int, str] | None = None,
    unit: str = "ha",
    overwrite: bool = False,
) -> Any:
    """Bar chart of class areas (one group of bars per zone), coloured by class colour.

    Args:
        stats: the output of :func:`class_areas`.
        path: write the figure here (PNG) when given.
        colors: class id -> colour (default: ``stats.attrs["colors"]``).
        unit: ``"ha"``, ``"m2"`` or ``"percent"``.
        overwrite: replace an existing image.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    columns = {"ha": "area_ha", "m2": "area_m2", "percent": "percent"}
    if not isinstance(unit, str) or unit not in columns:
        raise ConfigError(f"unit must be one of {list(columns)}, got {unit!r}")
    col = columns[unit]
    check_stats_frame(stats, "stats", ("zone", "class_id", "class_name", col))
    if path is not None:
        check_path(path, "path")
    overwrite = check_flag(overwrite, "overwrite")
    colors = _chart_colors(colors) or stats.attrs.get("colors", {})
    zones = list(dict.fromkeys(stats["zone"]))
    classes = stats.drop_duplicates("class_id").sort_values("class_id")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(zones) + 3), 4.5), dpi=100)
    width = 0.8 / max(len(classes), 1)
    for k, (cid, name) in enumerate(zip(classes["class_id"], classes["class_name"])):
        sub = stats[stats["class_id"] == cid].set_index("zone")[col]
        vals = [float(sub.get(z, 0.0)) for z in zones]
        xs = np.arange(len(zones)) + (k - (len(classes) - 1) / 2) * width
        ax.bar(xs, vals, width=width, label=name, color=colors.get(int(cid), None),
               edgecolor="black", linewidth=0.3)  # fmt: skip
    ax.set_xticks(np.arange(len(zones)))
    ax.set_xticklabels(zones, rotation=30 if len(zones) > 4 else 0, ha="right")
    ax.set_ylabel({"ha": "area (ha)", "m2": "area (m²)", "percent": "share of zone (%)"}[unit])
    ax.set_title("Area per class" + (" and zone" if len(zones) > 1 else ""))
    if len(classes):
        ax.legend(fontsize="small", ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    if path is not None:
        with atomic_path(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)
    return fig


def check_stats_frame(stats: Any, name: str, columns: Iterable[str]) -> None:
    """``stats`` is a DataFrame with ``columns`` (a table of :func:`class_areas`)."""
    if not isinstance(stats, pd.DataFrame):
        raise ConfigError(
            f"{name}: expected the DataFrame of geoseg.analysis.class_areas, got "
            f"{type(stats).__name__} {brief(stats)}"
        )
    missing = [c for c in columns if c not in stats.columns]
    if missing:
        raise ConfigError(
            f"{name}: the table has no column(s) {missing} (its columns: "
            f"{list(stats.columns)[:12]}); give the DataFrame of geoseg.analysis.class_areas"
        )


def _chart_colors(colors: Any) -> dict[int, str]:
    """``colors`` (class id -> a matplotlib colour) checked; {} for None."""
    from matplotlib.colors import is_color_like

    if colors is None:
        return {}
    if not isinstance(colors, Mapping):
        raise ConfigError(
            f"colors: expected a mapping of class id to colour, e.g. {{1: '#1f77b4'}}, got "
            f"{type(colors).__name__} {brief(colors)}"
        )
    for cid, color in colors.items():
        check_int(cid, f"colors key {cid!r}", unit="a class id")
        if not is_color_like(color):
            raise ConfigError(
                f"colors[{cid!r}]: {brief(color)} is not a colour; give a name or '#rrggbb'"
            )
    return {int(k): v for k, v in colors.items()}
