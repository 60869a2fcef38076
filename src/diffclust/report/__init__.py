"""`diffclust report`: a browsable, offline HTML report of a run (galleries, map, names, scores)."""

from diffclust.report.build import build_report

__all__ = ["build_report"]
