"""Ranking: hybrid score, filters, diversity."""
