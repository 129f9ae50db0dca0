"""Is B slower than A? The significance test behind ``gptref track compare`` and ``check``.

The samples are seconds per call, one per round, from interleaved rounds: round ``i`` of A
and round ``i`` of B ran within the same fraction of a second (``gptref.track.abtest``), so
a slow spell of the machine lands on both, and the pairs carry the comparison. Two
statistics, both needed for a verdict:

- the ratio B / A: the median of the paired ratios ``b[i] / a[i]``, with a percentile
  bootstrap interval (pairs resampled, seeded: the same samples give the same interval);
- a rank test's two-sided p-value: Wilcoxon's signed-rank test of the paired log-ratios
  (the paired form of Mann-Whitney U); for runs that were not interleaved (two entries of
  the history) Mann-Whitney U itself, asv's test. Both from SciPy, no normality assumed.
  Mann-Whitney U of the paired samples is reported beside (``mwu_p``): it ignores the
  pairing, so on a machine whose load moves between rounds it misses what the pairs show.

A change is *significant* when p < ``alpha`` and the interval excludes 1; else "no
significant change", whatever the ratio says. A *regression*, what the gate fails on, is a
significant slow-down whose ratio exceeds ``1 + threshold``: small real changes (and the
percent or two by which two processes of one build can differ) are reported but do not
fail a build.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ALPHA = 0.01  # p below this, and the interval clear of 1: a significant change
CONFIDENCE = 0.99  # the ratio's bootstrap interval
THRESHOLD = 0.05  # a significant slow-down beyond +5 % is a regression, by default
BOOTSTRAP = 4000  # resamples


@dataclass(frozen=True)
class Verdict:
    name: str
    ratio: float  # B / A, median of paired ratios (> 1: B is slower)
    low: float  # the interval on the ratio, CONFIDENCE two-sided
    high: float
    p_value: float  # two-sided: Wilcoxon signed-rank when paired, else Mann-Whitney U
    n: int  # rounds (pairs; B's rounds when unpaired)
    significant: bool
    regression: bool  # significant, slower, and ratio > 1 + threshold
    threshold: float
    mwu_p: float  # Mann-Whitney U of the two sets, pairing ignored (asv's test)

    @property
    def change(self) -> str:
        """ "slower", "faster" or "no significant change"."""
        if not self.significant:
            return "no significant change"
        return "slower" if self.ratio > 1 else "faster"

    def describe(self) -> str:
        """One line: ``train_step: 1.103x [1.081, 1.127] p=2e-05 slower (REGRESSION > +5 %)``."""
        flag = f" (REGRESSION > +{100 * self.threshold:g} %)" if self.regression else ""
        return (f"{self.name}: {self.ratio:.3f}x [{self.low:.3f}, {self.high:.3f}] "
                f"p={self.p_value:.2g} n={self.n} {self.change}{flag}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "change": self.change}


def _scipy_stats():
    try:
        import scipy.stats
    except ImportError:
        raise ValueError("the significance test needs SciPy: pip install 'gptref[track]'") from None
    return scipy.stats


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value of ``a`` against ``b`` (SciPy's exact distribution for
    small samples without ties, else the normal approximation with tie correction)."""
    if min(len(a), len(b)) < 1:
        raise ValueError("mann_whitney_p: both sides need at least one sample")
    if len(set(a) | set(b)) == 1:
        return 1.0  # all equal: nothing to tell apart
    return float(_scipy_stats().mannwhitneyu(a, b, alternative="two-sided").pvalue)


def signed_rank_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired log-ratios ``log(b[i] / a[i])``
    (exact for small samples without ties); 1 when every pair is equal."""
    if len(a) != len(b) or not a:
        raise ValueError(f"signed_rank_p: need paired samples, got {len(a)} and {len(b)}")
    diffs = np.log(np.asarray(b, dtype=float) / np.asarray(a, dtype=float))
    if not diffs.any():
        return 1.0
    return float(_scipy_stats().wilcoxon(diffs, alternative="two-sided").pvalue)


def paired_ratio(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP,
    seed: int = 0,
    paired: bool = True,
) -> tuple[float, float, float]:
    """Round-paired samples -> (median of b[i] / a[i], its bootstrap interval's low, high).

    ``paired=False`` (runs that were not interleaved, e.g. two entries of the history):
    median(b) / median(a), each side resampled on its own."""
    if (paired and len(a) != len(b)) or min(len(a), len(b)) < 2:
        raise ValueError(f"paired_ratio: need two sides of >= 2 rounds (equal lengths when "
                         f"paired), got {len(a)} and {len(b)}")  # fmt: skip
    if not 0 < confidence < 1:
        raise ValueError(f"paired_ratio: confidence must be in (0, 1), got {confidence}")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("paired_ratio: samples are durations and must be > 0")
    rng = np.random.default_rng(seed)
    if paired:
        ratios = y / x
        boot = np.median(ratios[rng.integers(0, len(x), (resamples, len(x)))], axis=1)
        estimate = float(np.median(ratios))
    else:
        bx = np.median(x[rng.integers(0, len(x), (resamples, len(x)))], axis=1)
        by = np.median(y[rng.integers(0, len(y), (resamples, len(y)))], axis=1)
        boot, estimate = by / bx, float(np.median(y) / np.median(x))
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return estimate, float(low), float(high)


def compare_samples(
    name: str,
    a: Sequence[float],
    b: Sequence[float],
    *,
    alpha: float = ALPHA,
    threshold: float = THRESHOLD,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    paired: bool = True,
) -> Verdict:
    """A's and B's per-round samples of one benchmark -> its Verdict (see the module doc);
    ``paired=False`` for runs that were not interleaved."""
    if threshold < 0:
        raise ValueError(f"compare_samples: threshold must be >= 0 (0.05 = +5 %), got {threshold}")
    ratio, low, high = paired_ratio(a, b, confidence=confidence, seed=seed, paired=paired)
    mwu = mann_whitney_p(a, b)
    p = signed_rank_p(a, b) if paired else mwu
    significant = p < alpha and not (low <= 1 <= high)
    return Verdict(name, ratio, low, high, p, len(b), significant,
                   significant and ratio > 1 + threshold, threshold, mwu)  # fmt: skip


def round_value(samples: Sequence[float]) -> float:
    """A round's repetitions -> its one sample: the fastest repetition. On a shared machine
    other work only ever adds time, so the minimum is the least disturbed estimate (timeit's
    advice); the rounds' spread still carries the machine's noise into the test."""
    if not samples:
        raise ValueError("round_value: a round needs at least one repetition")
    return min(samples)


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))
