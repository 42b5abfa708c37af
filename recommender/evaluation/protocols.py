"""Offline evaluation: how often are a product's neighbours relevant, with confidence intervals.

Protocols
- **leave-one-out by a label**: every labelled product queries the rest of the catalog; results with
  the same label are relevant. The label, and every column derived from it, is removed from the
  metadata features first - otherwise metadata-only "precision" would read the answer off the label.
- **multi-view**: every image of a product with several shots (``views.csv``) queries a gallery of all
  images; the product's other shots are relevant. Image-only: the metadata of two shots of one
  product is identical, so a metadata side would simply be told the answer. Scored as an uploaded
  photo (the case it models: "find this product from my photo of it") and as a catalog item.
- **photo-to-product**: every extra shot, which is not in the catalog, is uploaded as a photo query
  through ``recommend(image=...)``; its own product is the one relevant result.

Every figure is a mean over queries with a percentile-bootstrap 95% interval; two settings are
called different only when the paired-bootstrap interval of their difference excludes zero.

Each protocol lives in its own module (:mod:`.loo`, :mod:`.views`; the per-query metrics they share in
:mod:`.per_query`); this module names them in one place.
"""

from recommender.evaluation.loo import labels_of, leaking_columns, leave_one_out
from recommender.evaluation.per_query import DEFAULT_KS, per_query_metrics
from recommender.evaluation.views import gallery_with_views, multi_view, photo_to_product, read_views

__all__ = ["DEFAULT_KS", "gallery_with_views", "labels_of", "leaking_columns", "leave_one_out", "multi_view",
           "per_query_metrics", "photo_to_product", "read_views"]
