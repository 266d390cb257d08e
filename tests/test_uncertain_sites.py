"""Sites flagged "uncertain": a low segmentation probability and no significant elevation change."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtg.pipeline.indicators import uncertain_sites


def test_only_low_probability_without_elevation_change_is_uncertain():
    table = pd.DataFrame({
        # a confirmed pit, a low-probability patch with no volume, a low-probability dump that grew, no probability
        # (an inventory polygon), and a low-probability patch without a DEM (volumes not measured)
        "mean_probability": [0.95, 0.62, 0.62, np.nan, 0.6],
        "excavated_m3": [2e6, 1e3, 0.0, 0.0, np.nan],
        "excavated_sigma_m3": [1e5, 2e3, 1e3, 1e3, np.nan],
        "deposited_m3": [1e6, 500.0, 5e4, 0.0, np.nan],
        "deposited_sigma_m3": [1e5, 2e3, 1e4, 1e3, np.nan],
    })
    assert uncertain_sites(table).tolist() == [False, True, False, False, False]
