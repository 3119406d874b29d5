"""The HTTP service of ``detect serve``: FastAPI routes around one :class:`~detect.serve.service.Service`.

Why FastAPI + uvicorn: the most used Python ASGI stack, well kept (Starlette underneath), with
request validation, an OpenAPI schema (``/openapi.json``, ``/docs``) and a test client for free,
and no opinion about the model. LitServe (also on FastAPI) brings its own batching loop and
worker processes per device; ours must run the one ``Predictor`` that ``detect predict`` uses,
batched in a thread next to the event loop (:mod:`detect.serve.batcher`), so the thin stack is
the better fit. Triton / TorchServe need a model repository in their own format and a second
postprocess outside Python.

Routes:
- ``GET /``: the web page (:mod:`detect.serve.page`).
- ``POST /v1/detect``: one image (multipart ``image``, raw body, or ``?url=`` with
  ``--allow-urls``); query ``conf``, ``iou``, ``max_det``, ``classes``, ``slice``.
- ``POST /{model}/{version}``: Roboflow's hosted-API route and response (``confidence`` and
  ``overlap`` in percent, ``api_key``, ``image=URL``, base64 bodies), so its clients work unchanged.
- ``POST /v1/audit``: the shelf audit of one photo, ``detect audit``'s JSON (:mod:`detect.serve.audit_route`).
- ``GET /health``, ``GET /metrics`` (Prometheus), ``GET /v1/model`` (classes, settings).
- Label Studio's ML backend: ``POST /setup``, ``/predict``, ``/webhook`` (:mod:`detect.serve.label_studio`).

Every bad request is a 4xx JSON error (:class:`~detect.serve.errors.ApiError`); an API key
(``--api-key-file``) is read from ``Authorization: Bearer``, ``X-API-Key`` or ``?api_key=``.
The service keeps no state between requests: run replicas behind any load balancer.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Annotated, Callable, Optional

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from detect import __version__
from detect.serve.errors import ApiError, error_body
from detect.serve.metrics import CONTENT_TYPE_LATEST
from detect.serve.responses import detect_body, ms, roboflow_body
from detect.serve.service import ServeConfig, Service
from detect.serve.uploads import BodyLimit, BodyTooLarge, fetch_url, read_body_image, too_large

_IMAGE_BODY = {  # the request body of the image routes, for the OpenAPI schema (read by hand, not by FastAPI)
    "requestBody": {"required": False, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }}}
_ROBOFLOW_BODY = {"requestBody": {"required": False, "content": {
    **_IMAGE_BODY["requestBody"]["content"],
    "application/x-www-form-urlencoded": {"schema": {"type": "string", "description": "base64 of the image"}}}}}


def create_app(cfg: ServeConfig | None = None, service: Service | None = None) -> FastAPI:
    """The app for ``cfg`` (the model loads here), or around a ready ``service`` (tests)."""
    svc = service or Service(cfg or ServeConfig())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        svc.close()

    app = FastAPI(title="retail-detect", version=__version__, lifespan=lifespan,
                  description="Detect retail products in photos: boxes, scores, class names and counts per class.")
    app.state.service = svc
    app.add_middleware(BodyLimit, max_bytes=svc.cfg.max_bytes, on_refuse=svc.metrics.refused_body)
    _errors(app, svc)

    def auth(request: Request) -> None:
        if not svc.keys:
            return
        if not svc.authorised(_given_key(request)):
            raise ApiError(401, "unauthorised", "missing or wrong API key: send it as 'Authorization: Bearer KEY', "
                           "'X-API-Key: KEY' or ?api_key=KEY", headers={"WWW-Authenticate": "Bearer"})

    async def image_of(request: Request, url: Optional[str], base64_body: bool = False):
        data = await fetch_url(url, svc.allow_urls, svc.cfg.max_bytes) if url else await read_body_image(request, base64_body)
        return await svc.decode_async(data)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        from detect.serve.page import page_html

        return HTMLResponse(page_html())

    @app.post("/v1/detect", openapi_extra=_IMAGE_BODY, summary="Detect products in one image")
    async def detect(
        request: Request,
        conf: Annotated[Optional[float], Query(ge=0, le=1, description="score threshold (default 0.25; never below the server's --conf)")] = None,
        iou: Annotated[Optional[float], Query(ge=0, le=1, description="NMS IoU threshold (default: the server's --iou)")] = None,
        max_det: Annotated[Optional[int], Query(ge=1, description="detections kept, at most the server's --max-det")] = None,
        classes: Annotated[Optional[list[str]], Query(description="keep only these class names or indices (repeat or comma-separate)")] = None,
        slice: Annotated[Optional[str], Query(description="sliced inference: auto | off | tile size (when the Predictor has it)")] = None,
        url: Annotated[Optional[str], Query(description="fetch the image from this URL (only hosts in --allow-urls)")] = None,
    ) -> dict:
        t0 = time.perf_counter()
        auth(request)
        opts = svc.options(conf, iou, max_det, classes, slice)
        with svc.batcher.arriving():
            image = await image_of(request, url)
            t1 = time.perf_counter()
            pending = svc.submit(image, opts)
        det, res = await svc.result(pending, opts)
        t2 = time.perf_counter()
        timing = {"decode": ms(t1 - t0), "queue": ms(res.queue_s), "inference": ms(res.infer_s), "total": ms(t2 - t0),
                  "batch_size": res.batch_size}
        svc.metrics.answered("/v1/detect", t2 - t0)
        return detect_body(det, image, svc.model_name, opts.to_dict(svc.classes), timing)

    _info_routes(app, svc, auth)

    from detect.serve import audit_route, label_studio

    audit_route.add_routes(app, svc, auth)

    corrections = None
    if svc.cfg.label_studio_dir:
        from detect.serve.corrections import Corrections

        corrections = Corrections(svc.cfg.label_studio_dir, svc.predictor.weights, svc.cfg.finetune_minutes)
    label_studio.add_routes(app, svc, auth, svc.cfg.label_studio_url, svc.cfg.label_studio_token, corrections)

    _roboflow_route(app, svc, auth, image_of)  # last: its path pattern matches any two-part path
    return app


def _info_routes(app: FastAPI, svc: Service, auth: Callable[[Request], None]) -> None:
    """``/health``, ``/v1/model`` and ``/metrics``: what is served and how it is doing."""

    @app.get("/health", summary="Liveness and the model served")
    def health() -> dict:
        return {"status": "UP", "model": svc.model_name, "classes": len(svc.classes), "version": __version__,
                "uptime_s": round(time.time() - svc.started, 1), "queue": svc.batcher.waiting}

    @app.get("/v1/model", summary="The model's classes and the server's settings")
    def model(request: Request) -> dict:
        auth(request)
        c = svc.cfg
        return {"model": svc.model_name, "classes": svc.classes, "imgsz": svc.predictor.imgsz,
                "conf_floor": c.conf, "default_conf": c.default_conf, "iou": c.iou, "max_det": c.max_det,
                "max_batch": svc.max_batch, "max_wait_ms": c.max_wait_ms, "max_upload_bytes": c.max_bytes,
                "max_pixels": c.max_pixels, "urls": bool(svc.allow_urls), "slice": svc.batcher.slices}

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    def metrics(request: Request) -> Response:
        auth(request)
        svc.metrics.queue.set(svc.batcher.waiting)
        return Response(svc.metrics.text(), media_type=CONTENT_TYPE_LATEST)


def _roboflow_route(app: FastAPI, svc: Service, auth: Callable[[Request], None], image_of: Callable) -> None:
    """``POST /{model_id}/{version}``: Roboflow's hosted detection API."""

    @app.post("/{model_id}/{version}", openapi_extra=_ROBOFLOW_BODY, summary="Roboflow-compatible detection",
              description="Roboflow's hosted object-detection API: any model id and version name this model; "
                          "confidence and overlap in percent (0-100), or fractions <= 1.")
    async def roboflow(
        request: Request, model_id: str, version: int,
        api_key: Annotated[Optional[str], Query(description="API key (when the server has --api-key-file)")] = None,
        confidence: Annotated[float, Query(ge=0, le=100)] = 40.0,
        overlap: Annotated[float, Query(ge=0, le=100)] = 30.0,
        classes: Annotated[Optional[str], Query(description="comma-separated class names to keep")] = None,
        image: Annotated[Optional[str], Query(description="image URL (only hosts in --allow-urls)")] = None,
        format: Annotated[str, Query()] = "json",
        max_detections: Annotated[Optional[int], Query(ge=1)] = None,
    ) -> dict:
        t0 = time.perf_counter()
        auth(request)
        if format != "json":
            raise ApiError(422, "bad_option", f"format={format!r}: this server answers format=json only")
        opts = svc.options(_fraction(confidence), _fraction(overlap), max_detections, [classes] if classes else None)
        with svc.batcher.arriving():
            img = await image_of(request, image, base64_body=True)
            pending = svc.submit(img, opts)
        det, _ = await svc.result(pending, opts)
        took = time.perf_counter() - t0
        svc.metrics.answered("roboflow", took)
        return roboflow_body(det, img, took)


def _given_key(request: Request) -> Optional[str]:
    """The API key of a request: ``Authorization: Bearer KEY``, ``Authorization: Basic`` with the
    key as password (Label Studio's ML backend auth), ``X-API-Key: KEY`` or ``?api_key=KEY``."""
    h = request.headers
    auth = h.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        import base64
        import binascii

        try:
            return base64.b64decode(value.strip()).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return h.get("x-api-key") or request.query_params.get("api_key")


def _fraction(v: float) -> float:
    """Roboflow's percent (40) or a fraction (0.4) -> a fraction."""
    return v / 100.0 if v > 1.0 else v


def _route(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None) or "unmatched"
    return "roboflow" if path == "/{model_id}/{version}" else path


def _errors(app: FastAPI, svc: Service) -> None:
    """Every error as ``{"error": {"status", "code", "message"}}``, counted in the metrics."""

    def answer(request: Request, status: int, code: str, message: str, headers=None) -> JSONResponse:
        route = _route(request)
        svc.metrics.errors.labels(route, code).inc()
        svc.metrics.requests.labels(route, str(status)).inc()
        return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return answer(request, e.status, e.code, e.message, e.headers)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, e: BodyTooLarge):
        t = too_large(svc.cfg.max_bytes)
        return answer(request, t.status, t.code, t.message, {"Connection": "close"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return answer(request, 422, "bad_option", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return answer(request, e.status_code, code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception):  # a bug, never bad input: say what, keep serving
        return answer(request, 500, "internal_error", f"{type(e).__name__}: {e}")
