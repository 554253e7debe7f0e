"""The API's answers as the client hands them back: the JSON objects themselves, typed.

``total=False``: the API may add fields, and a script should not break when it does.
"""

from __future__ import annotations

from typing import Any, TypedDict


class ModelVersion(TypedDict, total=False):
    version: int
    framework: str
    sha256: str
    size: int
    filename: str
    created_at: str


class Model(TypedDict, total=False):
    slug: str
    name: str
    description: str
    versions: list[ModelVersion]
    created_at: str


class Replicas(TypedDict, total=False):
    desired: int
    ready: int
    by_zone: dict[str, dict[str, int]]


class Instance(TypedDict, total=False):
    id: str
    version: int
    zone: str
    status: str
    error: str | None


class Service(TypedDict, total=False):
    slug: str
    name: str
    model: str
    status: str
    error: str | None
    replicas: Replicas
    in_flight: int | None
    autoscaling: dict[str, Any]
    traffic: list[dict[str, int]]
    instances: list[Instance]
    predict_url: str


class Logs(TypedDict, total=False):
    instance: str
    status: str
    tail: int
    logs: str


class ReleaseEvent(TypedDict, total=False):
    at: str
    action: str
    weight: int
    message: str
    figures: dict[str, Any] | None


class Release(TypedDict, total=False):
    id: int
    version: int
    from_version: int
    status: str
    step: int
    steps: list[int]
    weights: dict[str, int]
    interval_s: int
    reason: str
    history: list[ReleaseEvent]
    created_at: str
    finished_at: str | None


class Prediction(TypedDict, total=False):
    outputs: Any
    model_version: int


class Plan(TypedDict, total=False):
    name: str
    monthly_quota: int
    rate_limit_per_s: int
    max_in_flight: int | None
    price_per_1k: str


class Listing(TypedDict, total=False):
    """A marketplace app; its publisher also sees ``service``, ``status`` and its dates."""

    slug: str
    title: str
    summary: str
    description: str
    category: str
    icon: str
    publisher: str
    example_input: Any
    example_output: Any
    plans: list[Plan]
    service: str
    status: str
    created_at: str
    updated_at: str


class Subscription(TypedDict, total=False):
    id: int
    listing: str
    plan: str
    status: str
    period_start: str
    period_end: str
    used: int
    quota: int


class Usage(TypedDict, total=False):
    used: int
    quota: int
    period_start: str
    period_end: str
    daily: list[dict[str, Any]]


class ListingUsage(TypedDict, total=False):
    """A publisher's figures for one listing since ``since``: totals, then ``subscribers``
    (``organization``, ``calls``, ``revenue``), ``plans`` (``plan``, ``price_per_1k``,
    ``subscribers``, ``retired``, ``calls``, ``revenue``) and ``daily`` (``day``, ...)."""

    listing: str
    since: str
    calls: int
    revenue: str
    active_subscriptions: int
    subscribers: list[dict[str, Any]]
    plans: list[dict[str, Any]]
    daily: list[dict[str, Any]]


class ApiKey(TypedDict, total=False):
    """An API key as listed: never its secret. ``key`` (the whole key) only in ``create_key``'s answer."""

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    key: str
