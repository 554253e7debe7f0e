"""The Python client: one method per thing the REST API does, waits and follows on top.

    from modelbay_client import Client

    with Client.from_config() as modelbay:  # flags, MODELBAY_URL/MODELBAY_KEY, or `modelbay login`
        modelbay.upload_model("digits.onnx", name="digits")
        modelbay.deploy_service(name="digits", model="digits", replicas=2)
        modelbay.wait_for_service("digits")
        print(modelbay.predict("digits", [[0, 0, 5, 13, 9, 1, ...]])["outputs"])

Every failure is a ``ModelbayError``: ``ApiError`` (the API's ``code`` and ``detail``),
``ConnectionFailed``, ``WaitTimedOut``, ``OperationFailed``, ``NotConfigured``.
"""

from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx

from modelbay_client.config import load_credentials
from modelbay_client.errors import ApiError, ConnectionFailed, OperationFailed, WaitTimedOut
from modelbay_client.version import VERSION
from modelbay_client.types import (
    ApiKey,
    Listing,
    ListingUsage,
    Logs,
    Model,
    ModelVersion,
    Prediction,
    Release,
    Service,
    Subscription,
    Usage,
)

# (bytes sent, bytes in all), called as an upload goes.
UploadProgress = Callable[[int, int], None]

SERVICE_FAILED_STATUSES = frozenset({"failed", "stopped"})
RELEASE_END_STATUSES = frozenset({"promoted", "rolled_back", "failed"})


class Client:
    """A Modelbay site's REST API (``/api/v1``) with one API key.

    ``timeout_s`` bounds each HTTP request; an answer refused before it ran (429
    ``rate_limited`` / ``too_many_in_flight``, 503 ``unavailable``) is sent again after its
    ``Retry-After`` when that is at most ``retry_wait_limit_s`` (0: never sent again).
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout_s: float = 120,
        retry_wait_limit_s: float = 10,
        poll_interval_s: float = 1,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry_wait_limit_s = retry_wait_limit_s
        self.poll_interval_s = poll_interval_s
        self._http = httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {key}", "User-Agent": f"modelbay-client/{VERSION}"},
            timeout=timeout_s,
        )

    @classmethod
    def from_config(cls, *, url: str | None = None, key: str | None = None, **options: Any) -> Client:
        """A client for the URL and key given, else from the environment, else saved by ``modelbay login``."""
        credentials = load_credentials(url=url, key=key)
        return cls(credentials.url, credentials.key, **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- models ----------------------------------------------------------------------------
    def upload_model(
        self,
        path: str | os.PathLike[str],
        *,
        name: str,
        slug: str | None = None,
        description: str = "",
        progress: UploadProgress | None = None,
    ) -> Model:
        """A new model from a bare ``.onnx`` file or a ``.zip`` / ``.tar.gz`` package: version 1."""
        fields = {"name": name, "description": description, **({"slug": slug} if slug else {})}
        return self._upload("/models", path, fields=fields, progress=progress)

    def upload_model_version(
        self, model: str, path: str | os.PathLike[str], *, progress: UploadProgress | None = None
    ) -> ModelVersion:
        """The next version of an existing model."""
        return self._upload(f"/models/{model}/versions", path, fields={}, progress=progress)

    def list_models(self) -> list[Model]:
        return self._json("GET", "/models")

    def get_model(self, model: str) -> Model:
        return self._json("GET", f"/models/{model}")

    def delete_model(self, model: str) -> None:
        self._request("DELETE", f"/models/{model}")

    # --- services ------------------------------------------------------------------------
    def deploy_service(
        self,
        *,
        name: str,
        model: str,
        version: int | None = None,
        replicas: int | None = None,
        slug: str | None = None,
        autoscaling: dict[str, int] | None = None,
        network: str | None = None,
        timeout_s: int | None = None,
    ) -> Service:
        """Deploy a model version (default: its latest) as a service; it starts ``provisioning``."""
        body = _without_none(
            name=name,
            model=model,
            version=version,
            replicas=replicas,
            slug=slug,
            autoscaling=autoscaling,
            network=network,
            timeout_s=timeout_s,
        )
        return self._json("POST", "/services", json=body)

    def list_services(self) -> list[Service]:
        return self._json("GET", "/services")

    def get_service(self, service: str) -> Service:
        return self._json("GET", f"/services/{service}")

    def scale_service(
        self, service: str, *, replicas: int | None = None, autoscaling: dict[str, int] | None = None
    ) -> Service:
        """A fixed number of replicas, or autoscaling settings (``min_replicas``, ``max_replicas``, ...)."""
        return self._json(
            "PATCH", f"/services/{service}", json=_without_none(replicas=replicas, autoscaling=autoscaling)
        )

    def delete_service(self, service: str) -> None:
        """Delete the service; its instances are stopped."""
        self._request("DELETE", f"/services/{service}")

    def service_logs(self, service: str, *, tail: int = 200, instance: str | None = None) -> Logs:
        """An instance's recent output (default: the newest instance), oldest line first."""
        return self._json("GET", f"/services/{service}/logs", params=_without_none(tail=tail, instance=instance))

    def wait_for_service(
        self,
        service: str,
        *,
        timeout_s: float = 300,
        on_poll: Callable[[Service], None] | None = None,
    ) -> Service:
        """Poll until the service is ready with all its replicas; ``OperationFailed`` when it
        fails, ``WaitTimedOut`` past ``timeout_s``. ``on_poll`` sees each state."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.get_service(service)
            if on_poll is not None:
                on_poll(state)
            if state.get("status") in SERVICE_FAILED_STATUSES:
                raise OperationFailed(
                    f"Service {service} is {state['status']}: {state.get('error') or 'no reason given'}"
                )
            if service_is_ready(state):
                return state
            if time.monotonic() >= deadline:
                raise WaitTimedOut(
                    f"Service {service} was not ready after {timeout_s:g} s ({describe_service(state)})."
                )
            time.sleep(self.poll_interval_s)

    def follow_logs(
        self, service: str, *, tail: int = 200, instance: str | None = None, stop: Callable[[], bool] | None = None
    ) -> Iterator[tuple[str, str]]:
        """``(instance id, line)`` for the last ``tail`` lines, then for each new line as it is
        written, polling the logs endpoint, until ``stop()`` is true (or forever). When the newest
        instance changes (a restart, a new version), its lines start over."""
        seen: list[str] = []
        current = None
        while stop is None or not stop():
            logs = self.service_logs(service, tail=max(tail, FOLLOW_WINDOW), instance=instance)
            lines = logs.get("logs", "").splitlines()
            if logs.get("instance") != current:
                # Another instance: its last ``tail`` lines are new, those before count as seen.
                current, seen = logs.get("instance"), lines[: max(len(lines) - tail, 0)]
            for line in new_lines(seen, lines):
                yield logs["instance"], line
            seen = lines
            time.sleep(self.poll_interval_s)

    # --- releases ------------------------------------------------------------------------
    def start_release(
        self,
        service: str,
        *,
        version: int,
        steps: list[int] | None = None,
        interval_s: int | None = None,
        max_error_rate: float | None = None,
        max_p99_ms: float | None = None,
        min_calls: int | None = None,
    ) -> Release:
        """A gray release: ``version`` comes up beside the running one and takes ``steps`` % of the
        calls; unset settings take the API's defaults."""
        body = _without_none(
            version=version,
            steps=steps,
            interval_s=interval_s,
            max_error_rate=max_error_rate,
            max_p99_ms=max_p99_ms,
            min_calls=min_calls,
        )
        return self._json("POST", f"/services/{service}/releases", json=body)

    def list_releases(self, service: str) -> list[Release]:
        """The service's releases, newest first."""
        return self._json("GET", f"/services/{service}/releases")

    def get_release(self, service: str, release_id: int | None = None) -> Release:
        """A release with its history; without an id, the newest one."""
        if release_id is None:
            releases = self.list_releases(service)
            if not releases:
                raise ApiError(status=404, code="not_found", detail=f"Service {service} has no release.")
            release_id = releases[0]["id"]
        return self._json("GET", f"/services/{service}/releases/{release_id}")

    def promote_release(self, service: str, release_id: int | None = None) -> Release:
        """All calls to the new version now."""
        return self._release_action(service, release_id, "promote")

    def rollback_release(self, service: str, release_id: int | None = None) -> Release:
        """All calls back to the old version now."""
        return self._release_action(service, release_id, "rollback")

    def pause_release(self, service: str, release_id: int | None = None) -> Release:
        """Hold a rolling release at its step: the analysis stops until it is resumed."""
        return self._release_action(service, release_id, "pause")

    def resume_release(self, service: str, release_id: int | None = None) -> Release:
        """Roll a paused release on: a full interval of calls at its step, then the analysis again."""
        return self._release_action(service, release_id, "resume")

    def wait_for_release(
        self,
        service: str,
        release_id: int | None = None,
        *,
        timeout_s: float | None = None,
        on_event: Callable[[Release, dict[str, Any]], None] | None = None,
    ) -> Release:
        """Poll until the release ends (``promoted``, ``rolled_back``, ``failed``), or until the
        analysis pauses it (see ``paused_by_analysis``: nothing moves it on until someone
        resumes, promotes or rolls it back), and return it; ``on_event`` sees each step of its
        history once, as it appears. A release paused by an operator is waited for: that
        operator resumes it, or ends it."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        seen = 0
        while True:
            release = self.get_release(service, release_id)
            release_id = release["id"]
            history = release.get("history", [])
            for event in history[seen:]:
                if on_event is not None:
                    on_event(release, event)
            seen = len(history)
            if release.get("status") in RELEASE_END_STATUSES or paused_by_analysis(release):
                return release
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimedOut(f"Release {release_id} of {service} is still {release.get('status')}.")
            time.sleep(self.poll_interval_s)

    def _release_action(self, service: str, release_id: int | None, action: str) -> Release:
        release_id = self.get_release(service)["id"] if release_id is None else release_id
        return self._json("POST", f"/services/{service}/releases/{release_id}/{action}")

    # --- calls -----------------------------------------------------------------------------
    def predict(self, service: str, inputs: Any, *, route_key: str | None = None) -> Prediction:
        """Call a service with a batch of JSON inputs (one item per example)."""
        return self._call(f"/services/{service}/predict", json_inputs=inputs, route_key=route_key)

    def predict_raw(
        self, service: str, data: bytes | IO[bytes], *, content_type: str = "application/octet-stream"
    ) -> Prediction:
        """Call a service with one example that is raw bytes (an image, a sound, ...)."""
        return self._call(f"/services/{service}/predict", raw=(data, content_type))

    def call_app(self, app: str, inputs: Any, *, route_key: str | None = None) -> Prediction:
        """Call a marketplace app this organization subscribes to, with JSON inputs."""
        return self._call(f"/apps/{app}/predict", json_inputs=inputs, route_key=route_key)

    def call_app_raw(
        self, app: str, data: bytes | IO[bytes], *, content_type: str = "application/octet-stream"
    ) -> Prediction:
        """Call a marketplace app with one example that is raw bytes."""
        return self._call(f"/apps/{app}/predict", raw=(data, content_type))

    def _call(
        self,
        path: str,
        *,
        json_inputs: Any = None,
        raw: tuple[bytes | IO[bytes], str] | None = None,
        route_key: str | None = None,
    ) -> Prediction:
        headers = {"X-Route-Key": route_key} if route_key else {}
        if raw is None:
            return self._json("POST", path, json={"inputs": json_inputs}, headers=headers)
        data, content_type = raw
        content = data if isinstance(data, bytes) else data.read()  # read once: sent again on a retry
        return self._json("POST", path, content=content, headers={**headers, "Content-Type": content_type})

    # --- the marketplace ---------------------------------------------------------------------
    def list_apps(self, *, query: str = "", category: str = "") -> list[Listing]:
        """Published apps, optionally searched (``query``) or in one ``category``."""
        return self._json("GET", "/marketplace", params=_without_none(q=query or None, category=category or None))

    def get_app(self, app: str) -> Listing:
        """A published app with its plans and example input."""
        return self._json("GET", f"/marketplace/{app}")

    def subscribe(self, app: str, *, plan: str) -> Subscription:
        return self._json("POST", f"/marketplace/{app}/subscribe", json={"plan": plan})

    def list_subscriptions(self) -> list[Subscription]:
        return self._json("GET", "/subscriptions")

    def unsubscribe(self, subscription_id: int) -> None:
        """Cancel a subscription: access ends at once."""
        self._request("DELETE", f"/subscriptions/{subscription_id}")

    def usage(self, subscription: int | str) -> Usage:
        """A subscription's usage this period and per day; by its id, or by the app's slug."""
        if isinstance(subscription, str) and not subscription.isdigit():
            subscription = self.find_subscription(subscription)["id"]
        return self._json("GET", f"/subscriptions/{subscription}/usage")

    def find_subscription(self, app: str) -> Subscription:
        """This organization's subscription to an app (an active one first)."""
        mine = sorted(
            (s for s in self.list_subscriptions() if s.get("listing") == app), key=lambda s: s.get("status") != "active"
        )
        if not mine:
            raise ApiError(status=404, code="not_found", detail=f"No subscription to the app {app}.")
        return mine[0]

    # --- publishing (listings) -------------------------------------------------------------------
    def create_listing(
        self, *, service: str, slug: str, title: str, plans: list[dict[str, Any]], **fields: Any
    ) -> Listing:
        """List one of your services as an app (a draft): ``summary``, ``description``, ``category``, ..."""
        body = {"service": service, "slug": slug, "title": title, "plans": plans, **fields}
        return self._json("POST", "/listings", json=body)

    def list_listings(self) -> list[Listing]:
        """This organization's listings, drafts and unpublished ones too."""
        return self._json("GET", "/listings")

    def get_listing(self, listing: str) -> Listing:
        return self._json("GET", f"/listings/{listing}")

    def update_listing(self, listing: str, *, plans: list[dict[str, Any]] | None = None, **fields: Any) -> Listing:
        """Change a listing's page (``title``, ``summary``, ``description``, ``category``, ``icon``,
        ``example_input``, ``example_output``) and, given, its ``plans``: all those offered from
        now on. A plan whose terms change is retired for new subscribers; those it has keep it."""
        body = {**fields, **({"plans": plans} if plans is not None else {})}
        return self._json("PATCH", f"/listings/{listing}", json=body)

    def publish_listing(self, listing: str) -> Listing:
        """In the marketplace from now on: anyone finds it and may subscribe."""
        return self._json("POST", f"/listings/{listing}/publish")

    def unpublish_listing(self, listing: str) -> Listing:
        """Out of the marketplace: no new subscriber."""
        return self._json("POST", f"/listings/{listing}/unpublish")

    def listing_usage(self, listing: str, *, days: int = 30) -> ListingUsage:
        """Calls and revenue of the last ``days`` days (today included): in all, per subscriber
        organization, per plan, per day."""
        return self._json("GET", f"/listings/{listing}/usage", params={"days": days})

    # --- API keys ------------------------------------------------------------------------------
    def create_key(
        self, name: str, scopes: Iterable[str] = ("predict",), expires_at: datetime | str | None = None
    ) -> ApiKey:
        """A new key of this organization; its secret (``key``) is in this answer alone."""
        expires = expires_at.isoformat() if isinstance(expires_at, datetime) else expires_at
        return self._json("POST", "/keys", json={"name": name, "scopes": list(scopes), "expires_at": expires})

    def list_keys(self) -> list[ApiKey]:
        """The organization's keys in use (never their secrets), newest first."""
        return self._json("GET", "/keys")

    def revoke_key(self, key_id: int) -> None:
        """The key answers 401 from now on."""
        self._request("DELETE", f"/keys/{key_id}")

    # --- HTTP ------------------------------------------------------------------------------
    def _upload(
        self, path: str, file_path: str | os.PathLike[str], *, fields: dict[str, str], progress: UploadProgress | None
    ) -> Any:
        file_path = Path(file_path)
        with open(file_path, "rb") as file:
            content: IO[bytes] = file if progress is None else ProgressReader(file, progress)
            files = {"file": (file_path.name, content, _content_type(file_path))}
            return self._json("POST", path, data=fields, files=files)

    def _json(self, method: str, path: str, **options: Any) -> Any:
        response = self._request(method, path, **options)
        return response.json() if response.content else None

    def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        waited_s = 0.0  # over all the tries: at most retry_wait_limit_s
        while True:
            try:
                response = self._http.request(method, path, **options)
            except httpx.TransportError as error:
                raise ConnectionFailed(f"Could not reach {self.url}: {error or type(error).__name__}") from error
            if response.is_success:
                return response
            error = ApiError.from_response(response)
            if not error.retryable or waited_s + error.retry_after_s > self.retry_wait_limit_s:
                raise error
            time.sleep(error.retry_after_s)
            waited_s += error.retry_after_s


# How many lines ``follow_logs`` asks for at each poll: new lines are found against the last answer.
FOLLOW_WINDOW = 1000


def new_lines(seen: list[str], lines: list[str]) -> list[str]:
    """The lines of ``lines`` that follow what ``seen`` (the previous answer of a sliding
    window over the same log) ended with: the longest end of ``seen`` that starts ``lines``."""
    for overlap in range(min(len(seen), len(lines)), 0, -1):
        if seen[-overlap:] == lines[:overlap]:
            return lines[overlap:]
    return lines


def paused_by_analysis(release: Release) -> bool:
    """Paused by the release's analysis (too few calls to judge, its ``reason`` says), which
    only an operator moves on; an operator's own pause gives no reason."""
    return release.get("status") == "paused" and bool(release.get("reason"))


def service_is_ready(service: Service) -> bool:
    """Ready, with every replica it wants ready."""
    replicas = service.get("replicas") or {}
    return service.get("status") == "ready" and replicas.get("ready", 0) >= replicas.get("desired", 0)


def describe_service(service: Service) -> str:
    replicas = service.get("replicas") or {}
    return f"{service.get('status')}, {replicas.get('ready', 0)}/{replicas.get('desired', 0)} replicas ready"


class ProgressReader:
    """A binary file that reports how much of it has been read: what an upload has sent."""

    def __init__(self, file: IO[bytes], progress: UploadProgress) -> None:
        self._file, self._progress = file, progress
        self._total = os.fstat(file.fileno()).st_size

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        if chunk:
            self._progress(self._file.tell(), self._total)
        return chunk

    def fileno(self) -> int:  # httpx takes the length from it
        return self._file.fileno()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _without_none(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}
