"""``POST /v1/audit``: the shelf audit of one photo, answered as ``detect audit``'s JSON for it.

The photo goes through the service's batcher (the same ``Predictor.predict`` as ``/v1/detect``
and ``detect predict``), and its detections through :func:`detect.audit.audit.audit_detections`,
the call ``detect audit`` makes for every photo; the answer is that photo's entry of
``audit.json`` (:meth:`~detect.audit.audit.AuditResult.to_dict`: rows, facings, share of shelf,
gaps, compliance, detections) with ``model``, ``options`` and ``time_ms`` beside it.

The request: the photo as for ``/v1/detect`` (multipart ``image``, raw body, or ``?url=`` on a
server with ``--allow-urls``); a planogram as the multipart field ``planogram`` (CSV or JSON, a
file or text; ``detect audit --planogram``) and optionally ``product_map`` (``--product-map``);
query ``conf``, ``occupancy_conf``, ``gap_ratio``, ``shelf_edges``, ``iou``, ``max_det``,
``slice``, with ``detect audit``'s defaults. ``occupancy_conf`` below the server's ``--conf``
is raised to it (the model never scored lower; ``options`` says what was used).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Callable, Literal, Optional

from fastapi import FastAPI, Query, Request

from detect.audit.audit import DEFAULT_CONF, DEFAULT_OCCUPANCY_CONF, audit_detections
from detect.audit.gaps import RATIO
from detect.audit.planogram import Planogram, PlanogramError, parse_mapping, parse_planogram, text_of
from detect.serve.errors import ApiError
from detect.serve.responses import ms
from detect.serve.service import Service
from detect.serve.uploads import Upload, fetch_url, read_upload

PLANOGRAM_FIELDS = ("planogram", "product_map")  # the multipart fields read beside the image

_AUDIT_BODY = {"requestBody": {"required": False, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary"},
        "planogram": {"type": "string", "format": "binary", "description": "planogram CSV or JSON (detect audit --planogram)"},
        "product_map": {"type": "string", "format": "binary", "description": "product id -> class name, CSV or JSON"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}}}


def add_routes(app: FastAPI, svc: Service, auth: Callable[[Request], None]) -> None:
    """``POST /v1/audit`` on ``app`` (see the module docstring)."""

    @app.post("/v1/audit", openapi_extra=_AUDIT_BODY, summary="Shelf audit of one photo (detect audit's JSON)")
    async def audit(
        request: Request,
        conf: Annotated[float, Query(ge=0, le=1, description="score of a product")] = DEFAULT_CONF,
        occupancy_conf: Annotated[float, Query(ge=0, le=1, description="detections between this score and conf close "
                                               "gaps but count as no facing")] = DEFAULT_OCCUPANCY_CONF,
        gap_ratio: Annotated[float, Query(gt=1, description="a gap: products this many usual pitches apart")] = RATIO,
        shelf_edges: Annotated[Literal["products", "image"], Query(description="where the row-end gaps stop")] = "products",
        iou: Annotated[Optional[float], Query(ge=0, le=1, description="NMS IoU threshold (default: the server's --iou)")] = None,
        max_det: Annotated[Optional[int], Query(ge=1, description="detections kept, at most the server's --max-det")] = None,
        slice: Annotated[Optional[str], Query(description="sliced inference: auto | off | tile size (when the Predictor has it)")] = None,
        url: Annotated[Optional[str], Query(description="fetch the photo from this URL (only hosts in --allow-urls)")] = None,
    ) -> dict:
        t0 = time.perf_counter()
        auth(request)
        if occupancy_conf > conf:
            raise ApiError(422, "bad_option", f"occupancy_conf ({occupancy_conf}) must be at most conf ({conf})")
        opts = svc.options(occupancy_conf, iou, max_det, None, slice)  # the batch's detections down to the occupants
        with svc.batcher.arriving():
            up = await _upload(request, url, svc)
            planogram = _planogram(up, svc.classes)  # a bad planogram is refused before the model runs
            image = await svc.decode_async(up.data)
            t1 = time.perf_counter()
            pending = svc.submit(image, opts)
        det, res = await svc.result(pending, opts)
        h, w = image.shape[:2]
        product_conf = max(conf, opts.conf)

        def rules() -> dict:  # ~10 ms for a shelf of 200 products: off the event loop
            return audit_detections(det, w, h, planogram, conf=product_conf, shelf_edges=shelf_edges, ratio=gap_ratio,
                                    source=up.filename).to_dict()

        t2 = time.perf_counter()
        body = await asyncio.get_running_loop().run_in_executor(svc.decoder, rules)
        t3 = time.perf_counter()
        options = {"conf": product_conf, "occupancy_conf": opts.conf, "iou": opts.iou, "max_det": opts.max_det,
                   "gap_ratio": gap_ratio, "shelf_edges": shelf_edges,
                   "planogram": planogram.source if planogram is not None else None,
                   **({"slice": opts.slice} if opts.slice is not None else {})}
        timing = {"decode": ms(t1 - t0), "queue": ms(res.queue_s), "inference": ms(res.infer_s), "audit": ms(t3 - t2),
                  "total": ms(t3 - t0), "batch_size": res.batch_size}
        svc.metrics.answered("/v1/audit", t3 - t0)
        return {"model": svc.model_name, **body, "options": options, "time_ms": timing}


async def _upload(request: Request, url: Optional[str], svc: Service) -> Upload:
    """The photo (body or ``?url=``) and the planogram fields of a multipart body."""
    if not url:
        return await read_upload(request, extras=PLANOGRAM_FIELDS)
    extras = {}
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        extras = (await read_upload(request, extras=PLANOGRAM_FIELDS, need_image=False)).extras
    return Upload(await fetch_url(url, svc.allow_urls, svc.cfg.max_bytes), url, extras)


def _planogram(up: Upload, classes: list[str]) -> Optional[Planogram]:
    """The upload's planogram, checked against the model's classes (422 naming the line otherwise)."""
    if "planogram" not in up.extras:
        if "product_map" in up.extras:
            raise ApiError(422, "bad_planogram", "product_map was sent without a planogram (the field 'planogram')")
        return None
    try:
        mapping = None
        if "product_map" in up.extras:
            name, data = up.extras["product_map"]
            mapping = parse_mapping(text_of(data, name, "product map"), name)
        name, data = up.extras["planogram"]
        return parse_planogram(text_of(data, name), name, classes, mapping)
    except PlanogramError as e:
        raise ApiError(422, "bad_planogram", str(e)) from None
