"""Temporal consistency of per-period mining probabilities: a two-state hidden Markov model decoded per pixel.

Each pixel is, in every period, mining or not. The segmentation's probability ``p`` of a period is the evidence
(emission log-likelihoods ``log p`` for mining, ``log(1 - p)`` for not mining); a period in which the pixel was
never clear carries no evidence (both 0). A pixel that starts mining between two periods costs ``-log start``
nats, one that stops ``-log stop`` (mines open more often than they heal, so ``stop`` is the smaller); staying
costs nothing, so without evidence a pixel keeps its state. The decoded sequence is the Viterbi path of this
two-state model (an HMM with unnormalised transition weights), the sequence of highest total log-weight:

- a lasting change is kept from the period where its evidence starts: a pixel opens where the log-odds of mining
  exceed ``-log start`` (``p > 0.77`` for start 0.3) and stops where they fall below ``log stop`` (``p < 0.09``
  for stop 0.1);
- a one-period flip is undone unless its evidence outweighs both switches (``-log start - log stop`` nats);
- an unseen period takes the state its neighbours agree on, and a pixel never seen is not mining. Ties go to not
  mining.

Written once against the array API: the same code runs on numpy, CuPy and dask-free array-API arrays.
"""

import math

from array_api_compat import array_namespace

#: Probabilities are clipped to ``[EPS, 1 - EPS]`` before their logarithm.
EPS = 1e-4


def viterbi_mining(probability, start: float, stop: float):
    """The most probable mining state sequence of every pixel (module docstring).

    Parameters
    ----------
    probability : array
        ``(period, ...)`` probability of mining in each period, NaN where the pixel was not seen in the period.
    start : float
        Weight of a pixel starting to mine between two periods, in ``(0, 1)``.
    stop : float
        Weight of a mining pixel stopping between two periods, in ``(0, 1)``.

    Returns
    -------
    array
        ``(period, ...)`` bool, True where the decoded state is mining (also in unseen periods).

    Raises
    ------
    ValueError
        When ``start`` or ``stop`` is outside ``(0, 1)``.
    """
    for name, value in (("start", start), ("stop", stop)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} weight must lie in (0, 1), got {value}")
    xp = array_namespace(probability)
    n = probability.shape[0]
    seen = ~xp.isnan(probability)
    p = xp.clip(xp.where(seen, probability, xp.asarray(0.5, dtype=probability.dtype)), EPS, 1.0 - EPS)
    zero = xp.zeros_like(p[0, ...])
    off_off = on_on = 0.0
    off_on, on_off = math.log(start), math.log(stop)

    def emissions(t: int):
        return xp.where(seen[t, ...], xp.log1p(-p[t, ...]), zero), xp.where(seen[t, ...], xp.log(p[t, ...]), zero)

    score_off, score_on = emissions(0)
    came_on = []  # per period after the first: did the best path into (off, on) come from on?
    for t in range(1, n):
        off_from_on = score_on + on_off > score_off + off_off
        on_from_on = score_on + on_on > score_off + off_on
        best_off = xp.where(off_from_on, score_on + on_off, score_off + off_off)
        best_on = xp.where(on_from_on, score_on + on_on, score_off + off_on)
        e_off, e_on = emissions(t)
        score_off, score_on = best_off + e_off, best_on + e_on
        came_on.append((off_from_on, on_from_on))
    state = score_on > score_off
    states = [state]
    for t in range(n - 1, 0, -1):
        off_from_on, on_from_on = came_on[t - 1]
        state = xp.where(state, on_from_on, off_from_on)
        states.append(state)
    return xp.stack(states[::-1], axis=0)
