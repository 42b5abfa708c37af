"""Routes: health and stats, the product catalog, recommendations."""
