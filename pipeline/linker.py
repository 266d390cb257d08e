"""The exact sparse agglomerative linker of mine points and geometries, and the distances it is given.

:class:`SparseAgglomerativeLinker` clusters lon/lat points (or shapely geometries) with single, complete or
average linkage on the graph of pairs within ``h_max`` geodesic metres (:mod:`mtg.kernels.hac`): the flat clusters
at every cut equal scipy's dense ``linkage`` + ``fcluster``. Points are clustered tile by tile and shard by shard
(:mod:`mtg.pipeline.sharded_linking`), on dask workers when a client is given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from mtg.kernels.hac import SparseHAC, check_method, sparse_hac
from mtg.pipeline.errors import MtgError
from mtg.pipeline.sharded_linking import cluster_points

_DISTANCE = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(km|m)?\s*$", re.IGNORECASE)
# Unicode minus and look-alikes that spreadsheets export in numbers (ICMM's CSV has U+2212).


def parse_distance(text: str | float | int, name: str = "distance") -> float:
    """Metres from ``"10km"``, ``"500m"``, ``"2.5 km"`` or a bare number of metres (``"1000"``).

    Raises
    ------
    MtgError
        Naming the bad value when it is not a non-negative finite number with an optional ``m``/``km`` unit.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _DISTANCE.match(str(text))
        if not match:
            raise MtgError(f"{name} {text!r} is not a distance: write metres or kilometres, e.g. 500m, 2.5km, 1000")
        value = float(match.group(1)) * (1000.0 if (match.group(2) or "m").lower() == "km" else 1.0)
    if not np.isfinite(value) or value < 0:
        raise MtgError(f"{name} {text!r} must be a finite distance >= 0")
    return value


def cut_column(metres: float) -> str:
    """Label column of a cut: ``cluster_5000`` for 5 km, ``cluster_2500.5`` for 2500.5 m."""
    metres = float(metres)
    return f"cluster_{int(metres)}" if metres.is_integer() else f"cluster_{np.format_float_positional(metres)}"


class SparseAgglomerativeLinker:
    """Exact agglomerative clustering of lon/lat points (or geometries) on a sparse geodesic radius graph.

    A scikit-learn-style estimator: parameters in ``__init__``, :meth:`fit` returns ``self`` and sets the
    attributes ending in ``_``. The flat clusters at every cut equal scipy's dense
    ``fcluster(linkage(D, linkage), cut, "distance")`` up to relabelling (except at cuts flagged in
    ``ambiguous_cuts_``, where ties let the partition depend on merge order).

    Parameters
    ----------
    h_max : float
        Largest cut, in metres: only pairs within ``h_max`` are computed.
    cuts : sequence of float, optional
        Cut heights in metres, each in ``[0, h_max]``; default ``[h_max]``.
    linkage : {"single", "complete", "average"}
        Linkage method. "ward", "centroid" and "median" raise ``ValueError`` in :meth:`fit` (not exact on a
        sparse graph).

    Attributes
    ----------
    labels_ : numpy.ndarray
        int64 labels at the first cut (clusters numbered 0, 1, ... in order of first appearance).
    labels_by_cut_ : dict of float to numpy.ndarray
        Labels per cut (metres).
    ambiguous_cuts_ : list of float
        Cuts whose partition may differ from scipy's because of ties.
    linkages_ : list of mtg.kernels.hac.ComponentLinkage
        Linkage matrices of the connected components (scipy format, heights in metres).
    component_ : numpy.ndarray
        Connected component of each input in the graph of pairs within ``h_max``.
    n_clusters_ : int
        Number of clusters at the first cut.
    n_edges_ : int
        Pairs within ``h_max``.
    """

    def __init__(self, h_max: float, cuts: Sequence[float] | None = None, linkage: str = "single"):
        self.h_max = h_max
        self.cuts = cuts
        self.linkage = linkage

    def get_params(self, deep: bool = True) -> dict:
        return {"h_max": self.h_max, "cuts": self.cuts, "linkage": self.linkage}

    def set_params(self, **params) -> SparseAgglomerativeLinker:
        for key, value in params.items():
            if key not in self.get_params():
                raise ValueError(f"invalid parameter {key!r} for SparseAgglomerativeLinker")
            setattr(self, key, value)
        return self

    def _cuts(self) -> np.ndarray:
        cuts = [self.h_max] if self.cuts is None or len(self.cuts) == 0 else list(self.cuts)
        return np.asarray(cuts, dtype=np.float64)

    def fit(self, lon, lat=None, client: Any = None) -> SparseAgglomerativeLinker:
        """Cluster points given as ``lon, lat`` degree arrays, or geometries (lon/lat) given alone as ``lon``.

        Points are clustered tile by tile and shard by shard (:func:`mtg.pipeline.sharded_linking.cluster_points`),
        on the workers of ``client`` (a ``distributed.Client``) when one is given, else in this process.
        """
        if lat is None:
            return self.fit_geometries(lon)
        result = cluster_points(lon, lat, float(self.h_max), str(self.linkage), self._cuts(), client=client)
        return self._set(result)

    def fit_geometries(self, geometries) -> SparseAgglomerativeLinker:
        """Cluster shapely geometries in lon/lat degrees by the geodesic distance between their nearest parts."""
        from mtg.kernels.geometry_graph import geometry_distance_callback, geometry_radius_graph

        geometries = list(geometries)
        i, j, d = geometry_radius_graph(geometries, float(self.h_max))
        exact = geometry_distance_callback(geometries) if str(self.linkage).lower() == "average" else None
        return self._fit_graph(len(geometries), i, j, d, exact)

    def _fit_graph(self, n: int, i, j, d, exact) -> SparseAgglomerativeLinker:
        return self._set(sparse_hac(n, i, j, d, float(self.h_max), str(self.linkage), self._cuts(), exact))

    def _set(self, result: SparseHAC) -> SparseAgglomerativeLinker:
        cuts = result.cuts
        n = result.component.size
        self.labels_by_cut_ = {float(c): result.labels[k] for k, c in enumerate(cuts)}
        self.labels_ = result.labels[0]
        self.ambiguous_cuts_ = [float(c) for c, a in zip(cuts, result.ambiguous) if a]
        self.linkages_ = result.linkages
        self.component_ = result.component
        self.n_clusters_ = int(self.labels_.max()) + 1 if n else 0
        self.n_edges_ = result.n_edges
        self.n_exact_distances_ = result.n_exact_distances
        return self

    def fit_predict(self, lon, lat=None) -> np.ndarray:
        return self.fit(lon, lat).labels_


def checked_linker(h_max: float, cuts: Sequence[float], linkage: str) -> SparseAgglomerativeLinker:
    """A linker with the user's parameters checked, errors as :class:`MtgError`."""
    try:
        check_method(linkage)
    except ValueError as err:
        raise MtgError(f"--linkage {linkage}: {err}") from None
    cuts = list(cuts) or [h_max]
    above = [c for c in cuts if c > h_max]
    if above:
        raise MtgError(f"--cut {above[0]:g} m is above --h-max {h_max:g} m: raise --h-max to at least the largest cut")
    if len(set(cuts)) != len(cuts):
        raise MtgError(f"--cut values repeat: {[f'{c:g} m' for c in cuts]}")
    return SparseAgglomerativeLinker(h_max=h_max, cuts=cuts, linkage=linkage.lower())
