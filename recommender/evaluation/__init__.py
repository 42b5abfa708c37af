"""Evaluation: metrics, protocols, reports, datasets."""
