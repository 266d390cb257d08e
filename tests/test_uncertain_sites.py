"""Sites flagged "uncertain": a low segmentation probability and no elevation change."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtg.pipeline.indicators import uncertain_sites


def test_only_low_probability_without_elevation_change_is_uncertain():
    table = pd.DataFrame({
        # a confirmed pit; a patch like the default run's false positive (volumes above 2 sigma but 4 cm deep);
        # a low-probability dump that grew 2.5 m; no probability (an inventory polygon); no DEM (volumes not
        # measured); a low-probability patch with zero volumes and errors
        "area_km2": [0.5, 0.74, 0.2, 0.3, 0.3, 0.005],
        "mean_probability": [0.95, 0.88, 0.62, np.nan, 0.6, 0.67],
        "excavated_m3": [2e6, 3.2e4, 0.0, 0.0, np.nan, 0.0],
        "excavated_sigma_m3": [1e5, 1.4e4, 1e3, 1e3, np.nan, 0.0],
        "deposited_m3": [1e6, 8.4e3, 5e5, 0.0, np.nan, 0.0],
        "deposited_sigma_m3": [1e5, 3.9e3, 1e4, 1e3, np.nan, 0.0],
    })
    assert uncertain_sites(table).tolist() == [False, True, False, False, False, True]
