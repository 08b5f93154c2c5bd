"""The promotion gate: a candidate replaces the champion only if it is better by a margin on
the primary metric and better than every naive baseline; the first model needs only the
baselines."""

from dataclasses import dataclass

from mltrading_assets.models.evaluation import HIGHER_IS_BETTER


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def _gain(metric: str, candidate: float, other: float) -> float:
    """How much better ``candidate`` is than ``other`` (positive: better)."""
    return candidate - other if HIGHER_IS_BETTER[metric] else other - candidate


def decide(
    scores: dict[str, dict[str, float]],
    metric: str,
    margin: float,
    candidate: str = "candidate",
    champion: str = "champion",
    baselines: tuple[str, ...] = ("always_up", "last_direction"),
) -> Decision:
    """``scores``: name → metric → value, on one holdout. ``champion`` may be absent."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(HIGHER_IS_BETTER)}")
    mine = scores[candidate][metric]
    for baseline in baselines:
        theirs = scores[baseline][metric]
        if _gain(metric, mine, theirs) <= 0:
            return Decision(
                False,
                f"{metric} {mine:.4f} does not beat the {baseline} baseline ({theirs:.4f})",
            )
    if champion not in scores:
        return Decision(True, f"first model: {metric} {mine:.4f} beats every baseline")
    theirs = scores[champion][metric]
    gain = _gain(metric, mine, theirs)
    if gain < margin:
        return Decision(
            False,
            f"{metric} {mine:.4f} vs champion {theirs:.4f}: better by {gain:+.4f}, "
            f"the margin is {margin:.4f}",
        )
    return Decision(
        True,
        f"{metric} {mine:.4f} beats champion {theirs:.4f} by {gain:+.4f} "
        f"(margin {margin:.4f}) and every baseline",
    )
