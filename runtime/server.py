"""The runtime's ASGI application (no framework) and its uvicorn launcher.

Hot paths are kept short: exact-path dict routing, precomputed headers and
bodies, orjson, and ONNX inference inline on the event loop (concurrent
requests sharing one session run, see batching.py). Anything that may
be slow (user python code, scikit-learn, large ONNX batches) runs in a thread
pool so the loop keeps answering health checks.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import __version__
from .errors import (
    ApiError,
    CallerGone,
    InvalidInput,
    InvalidRequest,
    MethodNotAllowed,
    ModelError,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    Unavailable,
)
from .jsonutil import JSONDecodeError, dumps, loads
from .loaders import Model, load_model
from .multipart import get_part
from .tensors import parse_infer_request

DEFAULT_MAX_BODY = 64 * 1024 * 1024

_JSON = (b"content-type", b"application/json")
# The caller's credential (see runtime/README.md, "Authentication"); ASGI lowercases names.
AUTH_HEADER = b"authorization"
AUTH_SCHEME = b"Bearer "
# The header naming the instance in every answer.
INSTANCE_HEADER = b"x-modelbay-instance"
_GET = ("GET", "HEAD")
_POST = ("POST",)
_MODEL_PATH_RE = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?/?$")


def _json_content_type(content_type: str | None) -> bool:
    """JSON unless the client says otherwise. A missing type and
    ``application/x-www-form-urlencoded`` (curl -d's default) count as JSON."""
    if not content_type:
        return True
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime in ("application/json", "application/x-www-form-urlencoded", "") or mime.endswith("+json")


class RuntimeApp:
    """ASGI callable serving one model directory."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        name: str = "model",
        version: int = 1,
        threads: int = 1,
        workers: int = 4,
        max_body: int = DEFAULT_MAX_BODY,
        batching: bool = True,
        credential: str | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.model_dir = Path(model_dir).resolve()
        self.name = name
        self.version = version
        self.threads = max(1, threads)
        self.max_body = max_body
        self.batching = batching
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="modelbay-predict")

        self.model: Model | None = None
        self.loading = False
        self.error: str | None = None
        self.traceback: str | None = None
        self._load_thread: threading.Thread | None = None
        self._metadata_body: bytes | None = None

        # Every call must carry "Authorization: Bearer <credential>"; None: open (development).
        self._auth = AUTH_SCHEME + credential.encode() if credential else None
        self.instance_id = instance_id or None
        # Headers of every answer: the content type, and the instance's name.
        self._base_headers = [_JSON]
        if self.instance_id:
            self._base_headers.append((INSTANCE_HEADER, self.instance_id.encode()))

        self._version_str = str(version)
        self._version_headers = [(b"x-model-version", self._version_str.encode())]
        self._model_ready_body = dumps({"name": name, "ready": True})
        self._model_not_ready_body = dumps({"name": name, "ready": False})
        self._server_body = dumps({"name": "modelbay-runtime", "version": __version__, "extensions": []})

        base = f"/v2/models/{name}"
        vbase = f"{base}/versions/{version}"
        routes = {
            "/v2/health/live": (self._live, _GET),
            "/v2/health/ready": (self._ready, _GET),
            "/v2": (self._server_metadata, _GET),
            "/v2/": (self._server_metadata, _GET),
            "/predict": (self._predict, _POST),
        }
        for b in (base, vbase):
            routes[b] = (self._model_metadata, _GET)
            routes[b + "/ready"] = (self._model_ready, _GET)
            routes[b + "/infer"] = (self._infer, _POST)
        self.routes = routes

    # ------------------------------------------------------------------ loading

    def start_loading(self) -> None:
        """Load the model in a background thread (idempotent)."""
        if self._load_thread is not None:
            return
        self.loading = True
        self._load_thread = threading.Thread(target=self._load, name="modelbay-load", daemon=True)
        self._load_thread.start()

    def _load(self) -> None:
        started = time.monotonic()
        try:
            model = load_model(self.model_dir, threads=self.threads, batching=self.batching)
            self._metadata_body = dumps(
                {
                    "name": self.name,
                    "versions": [self._version_str],
                    "platform": model.platform,
                    "inputs": model.metadata_inputs,
                    "outputs": model.metadata_outputs,
                }
            )
            self.model = model
            sys.stderr.write(
                f"modelbay-runtime: loaded {self.name} v{self._version_str} ({model.platform})"
                f" in {time.monotonic() - started:.2f} s\n"
            )
            sys.stderr.flush()
        except BaseException as exc:  # noqa: BLE001 - report whatever user code raised
            self.traceback = traceback.format_exc()
            self.error = f"{type(exc).__name__}: {exc}"
            sys.stderr.write(f"modelbay-runtime: failed to load model from {self.model_dir}\n{self.traceback}")
            sys.stderr.flush()
        finally:
            self.loading = False

    def _require_model(self) -> Model:
        model = self.model
        if model is not None:
            return model
        if self.error is not None:
            raise Unavailable(f"model failed to load: {self.error}")
        raise Unavailable("model is loading")

    # ------------------------------------------------------------------- ASGI

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            try:
                if self._auth is not None:
                    self._authenticate(scope)
                route = self.routes.get(scope["path"])
                if route is None:
                    route = self._slow_route(scope["path"])
                handler, methods = route
                if scope["method"] not in methods:
                    raise MethodNotAllowed(
                        f"method {scope['method']} not allowed on {scope['path']} (allowed: {', '.join(methods)})",
                        headers=[(b"allow", ", ".join(methods).encode())],
                    )
                status, body, headers = await handler(scope, receive)
            except CallerGone:
                return  # nobody to answer
            except ApiError as exc:
                status = exc.status
                body = dumps({"code": exc.code, "detail": exc.detail})
                headers = exc.headers
            except Exception as exc:  # a bug of ours: still answer in JSON
                traceback.print_exc()
                status = 500
                body = dumps({"code": "internal_error", "detail": f"{type(exc).__name__}: {exc}"})
                headers = []
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [*self._base_headers, (b"content-length", b"%d" % len(body)), *headers],
                }
            )
            await send({"type": "http.response.body", "body": body})
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.start_loading()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.pool.shutdown(wait=False, cancel_futures=True)
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    def _authenticate(self, scope) -> None:
        """The call carries this instance's credential, or it is answered 401 (whatever
        its path or method). Compared in constant time."""
        for key, value in scope["headers"]:
            if key == AUTH_HEADER:
                if hmac.compare_digest(value, self._auth):
                    return
                raise Unauthenticated("wrong credential for this instance")
        raise Unauthenticated("this runtime answers only calls with its credential (Authorization: Bearer ...)")

    def _slow_route(self, path: str):
        m = _MODEL_PATH_RE.match(path)
        if m is None:
            raise NotFound(f"no such endpoint: {path}")
        name, version, _ = m.groups()
        if name != self.name:
            raise NotFound(f"model {name!r} not found (this runtime serves {self.name!r})")
        if version is not None and version != self._version_str:
            raise NotFound(f"model {name!r} has no version {version!r} (serving version {self._version_str})")
        # trailing slash variants
        route = self.routes.get(path.rstrip("/"))
        if route is None:
            raise NotFound(f"no such endpoint: {path}")
        return route

    async def _read_body(self, scope, receive) -> tuple[bytes, str | None]:
        """The request body (limited to max_body) and its Content-Type."""
        content_type = None
        max_body = self.max_body
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise InvalidRequest("invalid Content-Length header") from None
                if length > max_body:
                    raise PayloadTooLarge(
                        f"request body is {length} bytes; the limit is {max_body}",
                        headers=[(b"connection", b"close")],
                    )
            elif key == b"content-type":
                content_type = value.decode("latin-1")
        message = await receive()
        body = message.get("body", b"")
        if message.get("more_body", False):
            chunks = [body]
            size = len(body)
            while message.get("more_body", False):
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise InvalidRequest("client disconnected")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_body:
                    raise PayloadTooLarge(
                        f"request body exceeds the limit of {max_body} bytes", headers=[(b"connection", b"close")]
                    )
                chunks.append(chunk)
            body = b"".join(chunks)
        elif len(body) > max_body:
            raise PayloadTooLarge(
                f"request body exceeds the limit of {max_body} bytes", headers=[(b"connection", b"close")]
            )
        return body, content_type

    @staticmethod
    def _parse_json(body: bytes) -> object:
        if not body:
            raise InvalidRequest("empty request body; expected JSON")
        try:
            return loads(body)
        except JSONDecodeError as exc:
            raise InvalidRequest(f"malformed JSON: {exc}") from None

    # --------------------------------------------------------------- handlers

    async def _live(self, scope, receive):
        return 200, b'{"live":true}', []

    async def _ready(self, scope, receive):
        if self.model is not None:
            return 200, b'{"ready":true}', []
        if self.error is not None:
            body = dumps({"ready": False, "loading": False, "error": self.error, "traceback": self.traceback})
        else:
            body = b'{"ready":false,"error":null,"loading":true}'
        return 503, body, [(b"retry-after", b"1")]

    async def _server_metadata(self, scope, receive):
        return 200, self._server_body, []

    async def _model_metadata(self, scope, receive):
        self._require_model()
        return 200, self._metadata_body, self._version_headers

    async def _model_ready(self, scope, receive):
        if self.model is not None:
            return 200, self._model_ready_body, []
        return 503, self._model_not_ready_body, [(b"retry-after", b"1")]

    async def _infer(self, scope, receive):
        model = self._require_model()
        body, _ = await self._read_body(scope, receive)
        if len(body) > model.inline_max_body:  # parse, predict and encode off the event loop
            response = await self._in_pool(receive, self._infer_sync, model, body)
        elif model.batcher is not None:
            request_id, tensors, requested = parse_infer_request(self._parse_json(body))
            outputs = await model.infer_async(tensors, requested)
            response = self._infer_response(request_id, outputs)
        else:
            response = self._infer_sync(model, body)
        return 200, response, self._version_headers

    async def _in_pool(self, receive, work, *args) -> bytes:
        """``work(*args)`` in the prediction threads, unless the caller hangs up first: a
        call still waiting for a thread is then dropped, so the threads go to calls that
        someone still waits for (one already running cannot be stopped: it ends unheard)."""
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self.pool, work, *args)
        hang_up = asyncio.ensure_future(receive())  # the body is read: what comes next is a hang-up
        try:
            await asyncio.wait((done, hang_up), return_when=asyncio.FIRST_COMPLETED)
        finally:
            hang_up.cancel()
        if not done.done():
            done.cancel()  # a call not started yet never runs
            raise CallerGone()
        return done.result()

    def _infer_sync(self, model: Model, body: bytes) -> bytes:
        request_id, tensors, requested = parse_infer_request(self._parse_json(body))
        return self._infer_response(request_id, model.infer(tensors, requested))

    def _infer_response(self, request_id: object, outputs: list) -> bytes:
        if request_id is None:
            response = {"model_name": self.name, "model_version": self._version_str, "outputs": outputs}
        else:
            response = {
                "model_name": self.name,
                "model_version": self._version_str,
                "id": request_id,
                "outputs": outputs,
            }
        return self._encode(response)

    async def _predict(self, scope, receive):
        model = self._require_model()
        body, content_type = await self._read_body(scope, receive)
        if len(body) > model.inline_max_body:
            response = await self._in_pool(receive, self._predict_sync, model, body, content_type)
        elif model.batcher is not None:
            examples = self._examples(model, body, content_type)
            outputs = await model.predict_async(examples)
            response = self._encode({"outputs": outputs, "model_version": self.version})
        else:
            response = self._predict_sync(model, body, content_type)
        return 200, response, self._version_headers

    def _predict_sync(self, model: Model, body: bytes, content_type: str | None) -> bytes:
        outputs = model.predict(self._examples(model, body, content_type))
        return self._encode({"outputs": outputs, "model_version": self.version})

    def _examples(self, model: Model, body: bytes, content_type: str | None) -> list:
        """The list of examples of a /predict request."""
        if _json_content_type(content_type):
            request = self._parse_json(body)
            if not isinstance(request, dict) or "inputs" not in request:
                raise InvalidRequest('request body must be a JSON object like {"inputs": [example, ...]}')
            examples = request["inputs"]
            if not isinstance(examples, list) or not examples:
                raise InvalidRequest("'inputs' must be a non-empty list of examples")
        else:
            if not model.accepts_raw:
                raise InvalidInput(
                    'this model takes JSON inputs: send {"inputs": [...]} with Content-Type: application/json'
                )
            assert content_type is not None
            if content_type.split(";", 1)[0].strip().lower() == "multipart/form-data":
                body = get_part(body, content_type, "file")
            elif not body:
                raise InvalidRequest("empty request body")
            examples = [body]
        return examples

    @staticmethod
    def _encode(response: dict) -> bytes:
        try:
            return dumps(response)
        except TypeError as exc:
            raise ModelError(f"the model returned a value that cannot be encoded as JSON: {exc}") from None


# ---------------------------------------------------------------------- run


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {value!r}") from None


def read_credential(path: str | Path) -> str:
    """The credential in a file (surrounding whitespace ignored); exits when it cannot be
    read or is empty: a runtime told to require a credential never runs open."""
    try:
        credential = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"modelbay-runtime: cannot read the credential file {str(path)!r}: {exc}") from None
    if not credential:
        raise SystemExit(f"modelbay-runtime: the credential file {str(path)!r} is empty")
    return credential


def make_app(
    model_dir: str | Path,
    *,
    name: str = "model",
    version: int = 1,
    credential: str | None = None,
    instance_id: str | None = None,
) -> RuntimeApp:
    """A RuntimeApp configured from MODELBAY_RUNTIME_{THREADS,WORKERS,MAX_BODY,BATCHING}."""
    return RuntimeApp(
        model_dir,
        name=name,
        version=version,
        credential=credential,
        instance_id=instance_id,
        threads=_env_int("MODELBAY_RUNTIME_THREADS", 1),
        workers=_env_int("MODELBAY_RUNTIME_WORKERS", 4),
        max_body=_env_int("MODELBAY_RUNTIME_MAX_BODY", DEFAULT_MAX_BODY),
        batching=_env_int("MODELBAY_RUNTIME_BATCHING", 1) != 0,
    )


def serve(
    model_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    name: str = "model",
    version: int = 1,
    credential: str | None = None,
    instance_id: str | None = None,
    uds: str | None = None,
) -> None:
    """Run the runtime under uvicorn until SIGTERM/SIGINT (graceful).

    ``uds``: listen on this Unix socket instead of ``host``:``port`` (how the control
    plane reaches a sandboxed instance, which has no network).

    ``credential``: every call must carry it (``Authorization: Bearer ...``); None runs
    open. ``instance_id``: named in every answer's ``X-Modelbay-Instance`` header."""
    import uvicorn

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover
        loop = "asyncio"
    try:
        import httptools  # noqa: F401

        from .http import http_protocol

        http = http_protocol()  # httptools, one write per response
    except ImportError:  # pragma: no cover
        http = "h11"
    app = make_app(model_dir, name=name, version=version, credential=credential, instance_id=instance_id)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        uds=uds,
        loop=loop,
        http=http,
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,  # we sit behind the control plane; skip the middleware
        backlog=2048,
        # longer than clients' idle-connection expiry (httpx: 5 s), so that the
        # client, not the server, closes idle keep-alive connections: no races
        timeout_keep_alive=65,
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    server.run()
    # Worker threads stuck in user code must not keep the process alive.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if server.started else 1)
