"""How the report writes numbers: percentages, figures, and estimates with their intervals as the run view writes them."""

from __future__ import annotations


def percent(value) -> str:
    """0.953 -> "95.3 %"; None -> "–"."""
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "–"


def number(value, digits: int = 3) -> str:
    """0.95312 -> "0.953"; None -> "–"."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def interval(ci: dict | None) -> str:
    """{"low": 0.912, "high": 0.981} -> " [0.912, 0.981]"; nothing without both."""
    return f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci and ci.get("low") is not None and ci.get("high") is not None else ""


def estimate(block: dict | None) -> str:
    """An estimate with its patient-bootstrap interval, as the run view writes it."""
    if not block or block.get("estimate") is None:
        return "–"
    return f"{block['estimate']:.3f} [{block['low']:.3f}, {block['high']:.3f}]"
