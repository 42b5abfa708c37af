"""Customers: personalised recommendations (behaviour + content, each hit explained) and new interactions.

Both are thin over the library: ``HybridRecommender.recommend_for_user`` and ``add_interactions`` (the
customer model's incremental update), through :class:`~recommender.catalog.live.LiveCatalog`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from recommender.api.deps import LiveDep, Service, ServiceDep, require_read_key, require_write_key
from recommender.api.routes.recommend import _check_limit, _filters, _recommender
from recommender.api.schemas import CustomerHit, CustomerRecommendationsOut, CustomerScores, EventIn, EventsOut
from recommender.catalog.live import LiveCatalog

router = APIRouter(prefix="/v1")
NO_INTERACTIONS = "no customer interactions are configured (set RECOMMENDER_INTERACTIONS)"


def _r(x: float) -> float:
    return round(float(x), 6)


def customer_recommendations_out(user_id: str, result) -> CustomerRecommendationsOut:
    hits = [CustomerHit(rank=k, id=r.id, name=r.name, score=_r(r.score),
                        scores=CustomerScores(cf=_r(r.cf_score), content=_r(r.metadata_score)),
                        contributions=CustomerScores(cf=_r(r.cf_contribution), content=_r(r.metadata_contribution)),
                        because=list(r.because), why=r.why(), image_url=f"/v1/products/{r.id}/image")
            for k, r in enumerate(result.items, 1)]
    return CustomerRecommendationsOut(user_id=user_id, weight_cf=_r(result.weight), n_candidates=result.n_candidates,
                                      notes=result.notes, empty_reason=result.empty_reason, results=hits)


def _customers(live: LiveCatalog, service: Service):
    rec = _recommender(live)
    if not live.has_customers:
        from recommender.catalog.events_sql import has_events

        # configured, or events stored: still fitting (at start, or a shop's first events), or failed (/ready says)
        if service.settings.interactions or has_events(live.repo.engine):
            detail = (f"customer model failed to load: {service.load_error}" if service.load_error
                      else "the customer model is being fitted")
            raise HTTPException(503, detail, headers={"Retry-After": "2"})
        raise HTTPException(409, NO_INTERACTIONS)
    return rec


@router.get("/users/{user_id}/recommendations", response_model=CustomerRecommendationsOut,
            dependencies=[Depends(require_read_key)],
            responses={404: {"description": "no such customer"}, 409: {"description": "no interactions"}, 422: {}})
def user_recommendations(
    user_id: str, live: LiveDep, service: ServiceDep,
    limit: Annotated[int, Query(description="number of results")] = 10,
    weight_cf: Annotated[float | None, Query(ge=0, le=1, description="1 = behaviour only, 0 = content")] = None,
    exclude_bought: Annotated[bool, Query(description="leave out what the customer already bought")] = True,
    category: Annotated[list[str] | None, Query()] = None, sub_category: Annotated[list[str] | None, Query()] = None,
    brand: Annotated[list[str] | None, Query()] = None, colour: Annotated[list[str] | None, Query()] = None,
    price_min: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    price_max: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
) -> CustomerRecommendationsOut:
    """Products for a customer: ``w_cf * behaviour + (1 - w_cf) * content``, each hit with its CF and content
    scores and its reasons ("because you bought ...")."""
    _check_limit(limit, service)
    filters = _filters(category, sub_category, brand, colour, price_min, price_max)
    rec = _customers(live, service)
    if service.events is not None:  # events other workers committed since this one last looked
        service.events.catch_up(live)
    with service.query_slots:
        result = rec.recommend_for_user(user_id, k=limit, weight_cf=weight_cf, filters=filters,
                                        exclude_bought=exclude_bought)
    return customer_recommendations_out(user_id, result)


@router.post("/events", response_model=EventsOut, dependencies=[Depends(require_write_key)],
             responses={202: {"description": "stored: the shop's first events; the customer model is being fitted"},
                        401: {}, 403: {}, 413: {}, 422: {}})
def add_events(body: EventIn | list[EventIn], live: LiveDep, service: ServiceDep, response: Response) -> EventsOut:
    """Record interactions (one or a list) and update those customers' recommendations at once (incremental,
    no retrain). Validated as the interactions loader validates files; errors name the events (first = 1).
    Committed to the catalog database in one transaction before the answer: every worker applies them before
    its next customer answer, and the next start fits on them."""
    events = body if isinstance(body, list) else [body]
    if not events:
        raise HTTPException(422, "no events given")
    if len(events) > service.settings.max_batch:
        raise HTTPException(413, f"{len(events)} events: over the batch limit of {service.settings.max_batch}")
    rows = [e.model_dump(exclude_none=True) for e in events]
    columns = {c for r in rows for c in r}
    table = {c: [r.get(c) for r in rows] for c in columns}
    if "weight" in table:
        table["weight"] = [1.0 if w is None else w for w in table["weight"]]
    if not live.has_customers and not service.settings.interactions:
        # A shop's first events: stored now, learned from by the customer model the worker fits next.
        from recommender.catalog.events_sql import EventLog, validate_events

        stored = validate_events(_recommender(live), table)
        EventLog(live.repo.engine).append(stored)
        response.status_code = 202
        return EventsOut(accepted=len(stored), users=sorted(set(stored.frame["user_id"])), interactions=0,
                         note=f"stored; the customer model is fitted from the stored events within "
                              f"{service.settings.sync_interval_s:g} s")
    _customers(live, service)
    # Without an event log (a live catalog given its interactions directly) events stay in this worker's memory.
    added = service.events.record(live, table) if service.events is not None else live.add_events(table)
    return EventsOut(accepted=len(added), users=sorted(set(added.frame["user_id"])),
                     interactions=len(live.interactions))
