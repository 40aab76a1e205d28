"""Plots of result files (never of live engines): S_PP and S_TG versus N_KV, see ``plots.sweep_plot``."""
from plots.sweep_plot import sweep_figure, write_plots

__all__ = ["sweep_figure", "write_plots"]
