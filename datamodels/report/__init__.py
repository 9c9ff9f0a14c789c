"""The demo's report: LDS on held-out models, a predicted-vs-actual scatter, a target beside its
top influencers and, when the run has selections, their retrained accuracy against budget, written as
PNG files plus summary.json.

A leaf: nothing in the library imports it (the CLI and analysis scripts do), so
its plotting never shapes the library's imports. Loaders live where they
belong: :meth:`datamodels.runs.Run.load_fit`, :meth:`~datamodels.runs.Run.heldout_rows`,
:func:`datamodels.evaluate.heldout_predictions`, :meth:`datamodels.attribution.Attribution.from_run`.
"""

from .plots import plot_influencer_grid, plot_influencers, plot_scatter, show_image
from .selection import collect, plot_selection
from .summary import target_images, write_influencer_grid, write_report

__all__ = ["collect", "plot_influencer_grid", "plot_influencers", "plot_scatter", "plot_selection", "show_image",
           "target_images", "write_influencer_grid", "write_report"]
