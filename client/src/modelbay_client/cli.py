"""``modelbay``: the command line over the Python client.

Exit codes (client/README.md): 0 done, 1 the API answered an error, 2 a usage error (bad
arguments, a bad plan spec, unreadable input, not logged in), 3 the site could not be
reached, 4 a wait timed out, 5 what was waited for ended badly (a failed service, a release
rolled back or failed, or paused by its analysis), 130 interrupted.

A watched release (``releases watch``, ``releases start --watch``) that its analysis pauses
(too few calls to judge) stays so until someone acts: the watch prints the pause and its
reason and exits 5, naming ``modelbay releases resume``. A pause by an operator (``releases
pause``, the console) is a deliberate hold that the same operator ends: the watch says so
and goes on until the release ends (bounded by ``--wait-timeout``, then 4).
"""

from __future__ import annotations

import argparse
import getpass
import json
import mimetypes
import os
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from modelbay_client.client import Client, describe_service, paused_by_analysis
from modelbay_client.config import (
    KEY_VARIABLE,
    URL_VARIABLE,
    load_credentials,
    save_credentials,
    saved_credentials,
)
from modelbay_client.errors import (
    ApiError,
    ConnectionFailed,
    ModelbayError,
    NotConfigured,
    OperationFailed,
    WaitTimedOut,
)
from modelbay_client.terminal import Terminal, table
from modelbay_client.types import ApiKey, Listing, ListingUsage, Plan, Prediction, Release, Service
from modelbay_client.version import VERSION

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMED_OUT = 4
EXIT_FAILED = 5
EXIT_INTERRUPTED = 130


class UsageError(ModelbayError):
    """The command line asks for something that cannot be done as given."""


EXIT_CODES: dict[type[ModelbayError], int] = {
    UsageError: EXIT_USAGE,
    ApiError: EXIT_API_ERROR,
    NotConfigured: EXIT_USAGE,
    ConnectionFailed: EXIT_UNREACHABLE,
    WaitTimedOut: EXIT_TIMED_OUT,
    OperationFailed: EXIT_FAILED,
}

Handler = Callable[[argparse.Namespace, Terminal], int | None]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on bad arguments, as argparse does
    terminal = Terminal(json_mode=args.json)
    try:
        return args.handler(args, terminal) or EXIT_OK
    except ModelbayError as error:
        terminal.error(error)
        return exit_code(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def exit_code(error: ModelbayError) -> int:
    return next((code for kind, code in EXIT_CODES.items() if isinstance(error, kind)), EXIT_API_ERROR)


# --- the parser -------------------------------------------------------------------------------
Commands = argparse._SubParsersAction


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelbay", description="Modelbay from the command line.")
    parser.add_argument("--version", action="version", version=f"modelbay {VERSION}")
    _common_options(parser, defaults=True)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    _command(commands, "login", login, "Check an API key and save it, with the site's URL, for the next commands.")
    _models_commands(_group(commands, "models", "Upload and list models."))
    _services_commands(_group(commands, "services", "Deploy, scale, follow and delete services."))
    _releases_commands(_group(commands, "releases", "Gray releases: a new version takes the calls step by step."))
    _input_options(_command(commands, "predict", predict_command, "Call a service.", target="service"))
    _apps_commands(_group(commands, "apps", "Find, subscribe to and call marketplace apps."))
    _listings_commands(_group(commands, "listings", "Publish your services as marketplace apps; their usage."))
    _keys_commands(_group(commands, "keys", "Make, list and revoke this organization's API keys."))
    usage = _command(commands, "usage", usage_command, "Your subscriptions' calls against their quota.")
    usage.add_argument("app", nargs="?", help="An app's slug or a subscription's id: its usage per day.")
    return parser


def _command(
    commands: Commands, name: str, handler: Handler, help_text: str, *, target: str = ""
) -> argparse.ArgumentParser:
    """A command, taking the common options after its name too, and its ``target`` (a positional) if any."""
    sub = commands.add_parser(name, parents=[_COMMON], help=help_text, description=help_text)
    sub.set_defaults(handler=handler)
    if target:
        sub.add_argument(target)
    return sub


def _group(commands: Commands, name: str, help_text: str) -> Commands:
    sub = commands.add_parser(name, help=help_text, description=help_text)
    return sub.add_subparsers(title="commands", required=True, metavar="COMMAND")


def _models_commands(models: Commands) -> None:
    upload = _command(models, "upload", models_upload, "Upload a model file (.onnx, .zip, .tar.gz).")
    upload.add_argument("file", type=Path)
    upload.add_argument("--name", help="The new model's name (default: the file's name).")
    upload.add_argument("--slug")
    upload.add_argument("--description", default="")
    upload.add_argument("--version-of", metavar="MODEL", help="Add the file as the next version of this model.")
    _command(models, "list", models_list, "Your models and their versions.")


def _services_commands(services: Commands) -> None:
    deploy = _command(services, "deploy", services_deploy, "Deploy a model version as a service.", target="model")
    deploy.add_argument("--name", help="The service's name (default: the model's slug).")
    deploy.add_argument("--slug")
    deploy.add_argument("--version", type=int, help="Default: the model's latest version.")
    deploy.add_argument("--replicas", type=int)
    _wait_options(deploy)
    _command(services, "list", services_list, "Your services.")
    _command(services, "get", services_get, "A service's status, replicas and instances.", target="service")
    scale = _command(services, "scale", services_scale, "Set a service's number of replicas.", target="service")
    scale.add_argument("replicas", type=int)
    _wait_options(scale)
    logs = _command(services, "logs", services_logs, "An instance's output (the newest by default).", target="service")
    logs.add_argument("--tail", type=int, default=200, help="How many lines (default 200).")
    logs.add_argument("--instance")
    logs.add_argument("-f", "--follow", action="store_true", help="Keep printing new lines until interrupted.")
    _command(services, "delete", services_delete, "Delete a service; its instances stop.", target="service")


def _releases_commands(releases: Commands) -> None:
    start = _command(releases, "start", releases_start, "Start rolling out a version.", target="service")
    start.add_argument("version", type=int)
    start.add_argument("--steps", type=_percentages, help="The new version's shares, e.g. 10,50,100.")
    start.add_argument("--interval-s", type=int, help="Seconds per step (the API's default: 60).")
    start.add_argument("--max-error-rate", type=float)
    start.add_argument("--max-p99-ms", type=float)
    start.add_argument("--min-calls", type=int, help="Calls each version needs in a step before it is judged.")
    start.add_argument("--watch", action="store_true", help="Then print its steps until it ends (as `watch`).")
    start.add_argument("--wait-timeout", type=float, metavar="SECONDS", help="With --watch: give up after this.")
    _command(releases, "list", releases_list, "A service's releases, newest first.", target="service")
    for name, handler, help_text in (
        ("get", releases_get, "A release with its history (the newest by default)."),
        ("promote", releases_promote, "All calls to the new version now."),
        ("rollback", releases_rollback, "All calls back to the old version now."),
        ("pause", releases_pause, "Hold a rolling release at its step until it is resumed."),
        ("resume", releases_resume, "Roll a paused release on (also one its analysis paused)."),
        (
            "watch",
            releases_watch,
            "Print a release's steps until it ends: exit 0 promoted, 5 otherwise or paused by its analysis.",
        ),
    ):
        sub = _command(releases, name, handler, help_text, target="service")
        sub.add_argument("release", type=int, nargs="?", help="The release's id (default: the newest).")
    releases.choices["watch"].add_argument("--wait-timeout", type=float, metavar="SECONDS", help="Give up after this.")


def _apps_commands(apps: Commands) -> None:
    listing = _command(apps, "list", apps_list, "Published apps.")
    listing.add_argument("query", nargs="?", default="", help="Words to search for.")
    listing.add_argument("--category", default="")
    subscribe = _command(apps, "subscribe", apps_subscribe, "Subscribe this organization to an app.", target="app")
    subscribe.add_argument("--plan", default="free", help="Default: free.")
    _input_options(_command(apps, "call", apps_call, "Call an app you subscribe to.", target="app"))


def _listings_commands(listings: Commands) -> None:
    _command(listings, "list", listings_list, "Your listings, drafts too.")
    _command(listings, "get", listings_get, "A listing with its plans.", target="listing")
    create = _command(listings, "create", listings_create, "List one of your services as an app (a draft).")
    create.add_argument("service", nargs="?", help="The service's slug (or `service` in --from-file).")
    create.add_argument("--slug", help="The app's slug, unique in the marketplace.")
    create.add_argument("--title")
    _listing_options(create)
    create.add_argument("--publish", action="store_true", help="Publish it at once.")
    edit = _command(listings, "edit", listings_edit, "Change a listing: only what is given.", target="listing")
    edit.add_argument("--title")
    _listing_options(edit)
    for name, handler, help_text in (
        ("publish", listings_publish, "Put a listing in the marketplace."),
        ("unpublish", listings_unpublish, "Take a listing out of the marketplace (its subscribers stay)."),
    ):
        _command(listings, name, handler, help_text, target="listing")
    usage = _command(
        listings, "usage", listings_usage, "Calls and revenue: per subscriber, per plan.", target="listing"
    )
    usage.add_argument("--days", type=int, default=30, help="How many days back, today included (default 30).")


def _listing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--summary")
    parser.add_argument("--description", metavar="TEXT|@FILE", help="Markdown; @FILE reads it from a file.")
    parser.add_argument("--category")
    parser.add_argument("--icon", help="An icon of the marketplace's set.")
    parser.add_argument("--example-input", metavar="JSON|@FILE", help="The app page's example input.")
    parser.add_argument("--example-output", metavar="JSON|@FILE")
    parser.add_argument(
        "--plan",
        dest="plans",
        action="append",
        type=plan_spec,
        metavar="SPEC",
        help=f"A plan, {PLAN_SPEC} (e.g. free:1000:5:0); again for each. All the plans offered from now on.",
    )
    parser.add_argument(
        "--from-file",
        type=Path,
        metavar="FILE",
        help="A JSON object of the same fields (plans as objects or SPECs); options given here win.",
    )


def _keys_commands(keys: Commands) -> None:
    create = _command(keys, "create", keys_create, "A new API key: its secret is shown this once.")
    create.add_argument("name")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        choices=("predict", "manage"),
        help="predict (calls) or manage (the rest); again for both. Default: predict.",
    )
    create.add_argument("--expires-at", metavar="ISO", help="When it stops working, e.g. 2027-01-31T00:00:00Z.")
    _command(keys, "list", keys_list, "The keys in use (never their secrets).")
    revoke = _command(keys, "revoke", keys_revoke, "Revoke a key: it answers 401 from now on.")
    revoke.add_argument("id", type=int)


def _common_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--url", default=default(None), help="The site, e.g. http://127.0.0.1:8000 (or MODELBAY_URL).")
    parser.add_argument("--key", default=default(None), help="An API key (or MODELBAY_KEY).")
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="Print the API's JSON, for scripts."
    )


# Given after the command too (`modelbay services get digits --json`): the same options, with
# no default of their own so that they do not undo those given before the command.
_COMMON = argparse.ArgumentParser(add_help=False)
_common_options(_COMMON, defaults=False)


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="Wait until every replica is ready (exit 5 if it fails).")
    parser.add_argument("--wait-timeout", type=float, default=300, metavar="SECONDS", help="Default 300 (then exit 4).")


def _input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="?",
        help="The batch as JSON (a list, one item per example), @FILE for JSON in a file, - for JSON on stdin.",
    )
    parser.add_argument("--file", help="Send this file's bytes as one raw example instead (- for stdin).")
    parser.add_argument("--content-type", help="The raw example's type (default: guessed from --file's name).")


def _percentages(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole percentages like 10,50,100") from None


# A plan on the command line: name:monthly_quota:rate_limit_per_s:price_per_1k[:max_in_flight].
PLAN_SPEC = "NAME:MONTHLY_QUOTA:RATE_LIMIT_PER_S:PRICE_PER_1K[:MAX_IN_FLIGHT]"


def plan_spec(text: str) -> Plan:
    """``free:1000:5:0`` as the API's plan; a spec of another form is a usage error (exit 2)."""
    parts = text.split(":")
    try:
        if len(parts) not in (4, 5) or not parts[0]:
            raise ValueError
        plan: Plan = {
            "name": parts[0],
            "monthly_quota": int(parts[1]),
            "rate_limit_per_s": int(parts[2]),
            "price_per_1k": parts[3],
        }
        if not Decimal(parts[3]).is_finite():
            raise ValueError
        if len(parts) == 5:
            plan["max_in_flight"] = int(parts[4])
    except (ValueError, InvalidOperation):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plan: expected {PLAN_SPEC}, whole numbers but the price, e.g. free:1000:5:0 or "
            "pro:100000:50:0.40:8"
        ) from None
    return plan


# --- commands ---------------------------------------------------------------------------------
def _client(args: argparse.Namespace) -> Client:
    return Client.from_config(url=args.url, key=args.key)


def login(args: argparse.Namespace, terminal: Terminal) -> None:
    url = args.url or os.environ.get(URL_VARIABLE) or saved_credentials().get("url") or _ask("Modelbay URL: ")
    key = args.key or os.environ.get(KEY_VARIABLE) or _ask("API key: ", secret=True)
    if key == "-":
        key = sys.stdin.readline().strip()
    credentials = load_credentials(url=url, key=key)
    with Client(credentials.url, credentials.key) as client:
        client.list_apps()  # answers 401 for a key the site does not know
    path = save_credentials(credentials)
    prefix = "_".join(credentials.key.split("_")[:2])
    terminal.result(
        {"url": credentials.url, "key_prefix": prefix, "config": str(path)},
        f"Logged in to {credentials.url} with the key {prefix}_…; saved in {path}.",
    )


def _ask(prompt: str, *, secret: bool = False) -> str:
    if not sys.stdin.isatty():
        raise UsageError(f"{prompt.strip(': ')} missing: give it as an option (--url, --key; --key - reads stdin).")
    return getpass.getpass(prompt) if secret else input(prompt)


def models_upload(args: argparse.Namespace, terminal: Terminal) -> None:
    if not args.file.is_file():
        raise UsageError(f"No file {args.file}.")
    with _client(args) as client, terminal.progress_line() as line:
        progress = (lambda done, total: line.bar(f"uploading {args.file.name}", done, total)) if line else None
        if args.version_of:
            created = client.upload_model_version(args.version_of, args.file, progress=progress)
            slug, version = args.version_of, created
        else:
            name = args.name or args.file.name.split(".")[0]
            created = client.upload_model(
                args.file, name=name, slug=args.slug, description=args.description, progress=progress
            )
            slug, version = created["slug"], created["versions"][0]
    terminal.result(
        created,
        f"Uploaded {slug} version {version['version']} ({version['framework']}, {version['size']} bytes, "
        f"sha256 {version['sha256'][:12]}).",
    )


def models_list(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        models = client.list_models()
    rows = [(m["slug"], m["name"], ", ".join(str(v["version"]) for v in m.get("versions", []))) for m in models]
    terminal.result(models, lambda: table(rows, ("model", "name", "versions")))


def services_deploy(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        service = client.deploy_service(
            name=args.name or args.model, model=args.model, version=args.version, replicas=args.replicas, slug=args.slug
        )
        terminal.note(f"Deploying {args.model} as the service {service['slug']}: {service['status']}.")
        if args.wait:
            service = _wait_for_service(client, terminal, service["slug"], args.wait_timeout)
    terminal.result(service, lambda: _service_text(service))


def services_scale(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        service = client.scale_service(args.service, replicas=args.replicas)
        terminal.note(f"Scaling {args.service} to {args.replicas} replicas.")
        if args.wait:
            service = _wait_for_service(client, terminal, args.service, args.wait_timeout)
    terminal.result(service, lambda: _service_text(service))


def _wait_for_service(client: Client, terminal: Terminal, slug: str, timeout_s: float) -> Service:
    with terminal.progress_line() as line:
        show = (lambda state: line.waiting(f"{slug}: {describe_service(state)}")) if line else None
        return client.wait_for_service(slug, timeout_s=timeout_s, on_poll=show)


def services_list(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        services = client.list_services()
    rows = [(s["slug"], s.get("model"), s["status"], _replicas_text(s), _traffic_text(s)) for s in services]
    terminal.result(services, lambda: table(rows, ("service", "model", "status", "replicas", "traffic")))


def services_get(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        service = client.get_service(args.service)
    terminal.result(service, lambda: _service_text(service))


def services_logs(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        if not args.follow:
            logs = client.service_logs(args.service, tail=args.tail, instance=args.instance)
            terminal.result(logs, logs.get("logs", "").rstrip("\n"))
            return
        for instance, line in client.follow_logs(args.service, tail=args.tail, instance=args.instance):
            if terminal.json_mode:
                terminal.json_line({"instance": instance, "line": line})
            else:
                terminal.print(line)


def services_delete(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        client.delete_service(args.service)
    terminal.result({"service": args.service, "deleted": True}, f"Deleting {args.service}: its instances stop.")


def _service_text(service: Service) -> str:
    lines = [
        f"{service['slug']}: {service['status']}, {_replicas_text(service)} replicas ready, traffic {_traffic_text(service)}"
    ]
    if service.get("error"):
        lines.append(f"  error: {service['error']}")
    lines += [f"  {i['id']}  v{i['version']}  {i['zone']}  {i['status']}" for i in service.get("instances", [])]
    if service.get("predict_url"):
        lines.append(f"  predict: {service['predict_url']}")
    return "\n".join(lines)


def _replicas_text(service: Service) -> str:
    replicas = service.get("replicas") or {}
    return f"{replicas.get('ready', 0)}/{replicas.get('desired', 0)}"


def _traffic_text(service: Service) -> str:
    return ", ".join(f"v{t['version']} {t['weight']} %" for t in service.get("traffic", [])) or "-"


# --- releases ---------------------------------------------------------------------------------
def releases_start(args: argparse.Namespace, terminal: Terminal) -> int | None:
    with _client(args) as client:
        release = client.start_release(
            args.service,
            version=args.version,
            steps=args.steps,
            interval_s=args.interval_s,
            max_error_rate=args.max_error_rate,
            max_p99_ms=args.max_p99_ms,
            min_calls=args.min_calls,
        )
        if args.watch:
            return _watch(client, terminal, args.service, release["id"], args.wait_timeout)
    terminal.result(release, lambda: _release_text(args.service, release))


def releases_list(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        releases = client.list_releases(args.service)
    rows = [(r["id"], f"v{r['from_version']} -> v{r['version']}", r["status"], _weights_text(r)) for r in releases]
    terminal.result(releases, lambda: table(rows, ("release", "versions", "status", "weights")))


def releases_get(args: argparse.Namespace, terminal: Terminal) -> None:
    _release_command(args, terminal, Client.get_release)


def releases_promote(args: argparse.Namespace, terminal: Terminal) -> None:
    _release_command(args, terminal, Client.promote_release)


def releases_rollback(args: argparse.Namespace, terminal: Terminal) -> None:
    _release_command(args, terminal, Client.rollback_release)


def _release_command(
    args: argparse.Namespace, terminal: Terminal, action: Callable[[Client, str, int | None], Release]
) -> None:
    with _client(args) as client:
        release = action(client, args.service, args.release)
    terminal.result(release, lambda: _release_text(args.service, release, history=True))


def releases_pause(args: argparse.Namespace, terminal: Terminal) -> None:
    _release_command(args, terminal, Client.pause_release)


def releases_resume(args: argparse.Namespace, terminal: Terminal) -> None:
    _release_command(args, terminal, Client.resume_release)


def releases_watch(args: argparse.Namespace, terminal: Terminal) -> int:
    with _client(args) as client:
        return _watch(client, terminal, args.service, args.release, args.wait_timeout)


def _watch(client: Client, terminal: Terminal, service: str, release_id: int | None, timeout_s: float | None) -> int:
    """Each step of the release as it happens; exit 0 when it is promoted, 5 when it is not or
    when its analysis paused it (no one is there to resume it: it would wait forever)."""

    def show(release: Release, event: dict[str, Any]) -> None:
        if terminal.json_mode:
            terminal.json_line({"release": release["id"], **event})
        else:
            terminal.print(_event_text(event))
        if release["status"] == "paused" and event is release["history"][-1] and not paused_by_analysis(release):
            terminal.note("Paused by an operator: watching on until it is resumed, promoted or rolled back.")

    release = client.wait_for_release(service, release_id, timeout_s=timeout_s, on_event=show)
    if not terminal.json_mode:
        terminal.print(_release_text(service, release))
    if paused_by_analysis(release):
        raise OperationFailed(
            f"Release {release['id']} of {service} is paused by its analysis. `modelbay releases resume {service} "
            f"{release['id']}` rolls it on (then watch again), or promote or roll it back."
        )
    return EXIT_OK if release["status"] == "promoted" else EXIT_FAILED


def _release_text(service: str, release: Release, *, history: bool = False) -> str:
    lines = [
        f"Release {release['id']} of {service}: v{release['from_version']} -> v{release['version']}, "
        f"{release['status']}, weights {_weights_text(release)}"
        + (
            f", steps {','.join(map(str, release['steps']))} every {release['interval_s']} s"
            if release.get("steps")
            else ""
        )
    ]
    if release.get("reason"):
        lines.append(f"  {release['reason']}")
    if history:
        lines += [f"  {_event_text(event)}" for event in release.get("history", [])]
    return "\n".join(lines)


def _weights_text(release: Release) -> str:
    return ", ".join(f"v{version} {weight} %" for version, weight in release.get("weights", {}).items())


def _event_text(event: dict[str, Any]) -> str:
    at = str(event.get("at", ""))[11:19]  # the time of day of an ISO timestamp
    text = f"{at}  {event.get('action', ''):<12} {event.get('weight', 0):>3} %  {event.get('message', '')}"
    figures = event.get("figures") or {}
    described = [
        f"{side}: {f.get('requests', 0)} calls, {f.get('errors', 0)} errors, p99 {f.get('p99_ms') or '-'} ms"
        for side, f in figures.items()
        if isinstance(f, dict)
    ]
    return text + (f"  ({'; '.join(described)})" if described else "")


# --- calls ------------------------------------------------------------------------------------
def predict_command(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        prediction = _send(args, client.predict, client.predict_raw, args.service)
    _show_prediction(terminal, prediction)


def apps_call(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        prediction = _send(args, client.call_app, client.call_app_raw, args.app)
    _show_prediction(terminal, prediction)


def _send(
    args: argparse.Namespace,
    with_json: Callable[[str, Any], Prediction],
    with_bytes: Callable[..., Prediction],
    target: str,
) -> Prediction:
    """JSON inputs (given, from a file, from stdin), or one raw example (a file's bytes, stdin's)."""
    if (args.inputs is None) == (args.file is None):
        raise UsageError("Give the inputs as JSON (or @FILE, or - for stdin), or --file for raw bytes: one of them.")
    if args.file is not None:
        data = sys.stdin.buffer.read() if args.file == "-" else _read(Path(args.file), binary=True)
        content_type = args.content_type or mimetypes.guess_type(args.file)[0] or "application/octet-stream"
        return with_bytes(target, data, content_type=content_type)
    return with_json(target, _json_inputs(args.inputs))


def _json_inputs(argument: str) -> Any:
    """The batch from the argument, a file (``@path``) or stdin (``-``); a whole request body
    (``{"inputs": ...}``, as curl sends it) is taken as well."""
    if argument == "-":
        text, source = sys.stdin.read(), "stdin"
    elif argument.startswith("@"):
        text, source = _read(Path(argument[1:]), binary=False), argument[1:]
    else:
        text, source = argument, "the inputs"
    try:
        value = json.loads(text)
    except ValueError as error:
        raise UsageError(f"{source} is not JSON: {error}") from None
    return value["inputs"] if isinstance(value, dict) and "inputs" in value else value


def _read(path: Path, *, binary: bool) -> Any:
    try:
        return path.read_bytes() if binary else path.read_text()
    except OSError as error:
        raise UsageError(f"Cannot read {path}: {error.strerror}.") from None


def _show_prediction(terminal: Terminal, prediction: Prediction) -> None:
    terminal.result(prediction, lambda: json.dumps(prediction.get("outputs")))


# --- the marketplace --------------------------------------------------------------------------
def apps_list(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        apps = client.list_apps(query=args.query, category=args.category)
    rows = [
        (
            a["slug"],
            a.get("title"),
            a.get("category"),
            a.get("publisher"),
            ", ".join(p["name"] for p in a.get("plans", [])),
        )
        for a in apps
    ]
    terminal.result(apps, lambda: table(rows, ("app", "title", "category", "publisher", "plans")))


def apps_subscribe(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        subscription = client.subscribe(args.app, plan=args.plan)
    terminal.result(
        subscription,
        f"Subscribed to {subscription['listing']} on the plan {subscription['plan']} (subscription "
        f"{subscription['id']}): {subscription['used']}/{subscription['quota']} calls used until "
        f"{subscription['period_end'][:10]}.",
    )


def usage_command(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        if args.app is None:
            subscriptions = client.list_subscriptions()
            rows = [(s["id"], s["listing"], s["plan"], s["status"], f"{s['used']}/{s['quota']}", s["period_end"][:10])
                    for s in subscriptions]  # fmt: skip
            header = ("subscription", "app", "plan", "status", "used", "until")
            terminal.result(subscriptions, lambda: table(rows, header))
            return
        usage = client.usage(args.app)
    days = table([(d["day"], d["calls"]) for d in usage.get("daily", [])], ("day", "calls"))
    terminal.result(usage, f"{usage['used']}/{usage['quota']} calls used until {usage['period_end'][:10]}\n{days}")


# --- publishing -------------------------------------------------------------------------------
LISTING_FIELDS = ("title", "summary", "description", "category", "icon", "example_input", "example_output", "plans")


def listings_list(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        listings = client.list_listings()
    rows = [(li["slug"], li.get("title"), li.get("status"), li.get("service"), _plan_names(li)) for li in listings]
    terminal.result(listings, lambda: table(rows, ("listing", "title", "status", "service", "plans")))


def listings_get(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        listing = client.get_listing(args.listing)
    terminal.result(listing, lambda: _listing_text(listing))


def listings_create(args: argparse.Namespace, terminal: Terminal) -> None:
    fields = listing_fields(args, creating=True)
    missing = [name for name in ("service", "slug", "title", "plans") if not fields.get(name)]
    if missing:
        raise UsageError(f"A new listing needs {', '.join(missing)}: SERVICE, --slug, --title, --plan SPEC.")
    with _client(args) as client:
        listing = client.create_listing(**fields)
        if args.publish:
            listing = client.publish_listing(listing["slug"])
    terminal.result(listing, lambda: _listing_text(listing))


def listings_edit(args: argparse.Namespace, terminal: Terminal) -> None:
    fields = listing_fields(args, creating=False)
    if not fields:
        raise UsageError(f"Nothing to change: give --{' or --'.join(f.replace('_', '-') for f in LISTING_FIELDS)}.")
    with _client(args) as client:
        listing = client.update_listing(args.listing, **fields)
    terminal.result(listing, lambda: _listing_text(listing))


def listings_publish(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        listing = client.publish_listing(args.listing)
    terminal.result(listing, lambda: _listing_text(listing))


def listings_unpublish(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        listing = client.unpublish_listing(args.listing)
    terminal.result(listing, lambda: _listing_text(listing))


def listing_fields(args: argparse.Namespace, *, creating: bool) -> dict[str, Any]:
    """The listing's fields from ``--from-file``, then those given as options (which win);
    for an edit, only what is given: the API leaves the rest as it is."""
    names = ("service", "slug", *LISTING_FIELDS) if creating else LISTING_FIELDS
    fields: dict[str, Any] = {}
    if args.from_file is not None:
        source = str(args.from_file)
        fields = _json_text(_read(args.from_file, binary=False), source)
        if not isinstance(fields, dict):
            raise UsageError(f"{source} is not a JSON object of the listing's fields.")
        unknown = sorted(set(fields) - set(names))
        if unknown:
            raise UsageError(f"{source}: unknown fields {', '.join(unknown)}; known: {', '.join(names)}.")
        if "plans" in fields:
            fields["plans"] = _file_plans(fields["plans"], source)
    for name in names:
        given = getattr(args, name, None)  # None: not given (``--example-output null`` gives a JSON null)
        if given is None:
            continue
        if name == "description":
            given = _text_or_file(given)
        elif name.startswith("example_"):
            given = _json_or_file(given, f"--{name.replace('_', '-')}")
        fields[name] = given
    return fields


def _file_plans(plans: Any, source: str) -> list[Plan]:
    """Plans in a file: the API's objects, or SPEC strings as ``--plan`` takes them."""
    if not isinstance(plans, list):
        raise UsageError(f"{source}: plans is a list of plans (objects, or {PLAN_SPEC} strings).")
    try:
        return [plan_spec(plan) if isinstance(plan, str) else plan for plan in plans]
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"{source}: {error}") from None


def _text_or_file(argument: str) -> str:
    if argument.startswith("@"):
        return _read(Path(argument[1:]), binary=False)
    return argument


def _json_or_file(argument: str, option: str) -> Any:
    if argument.startswith("@"):
        return _json_text(_read(Path(argument[1:]), binary=False), argument[1:])
    return _json_text(argument, option)


def _json_text(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise UsageError(f"{source} is not JSON: {error}") from None


def listings_usage(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        usage = client.listing_usage(args.listing, days=args.days)
    terminal.result(usage, lambda: _listing_usage_text(usage))


def _listing_text(listing: Listing) -> str:
    lines = [
        f"{listing['slug']}: {listing.get('title')} ({listing.get('status') or '-'}), "
        f"service {listing.get('service') or '-'}, category {listing.get('category') or '-'}"
    ]
    if listing.get("summary"):
        lines.append(f"  {listing['summary']}")
    rows = [
        (p["name"], p.get("monthly_quota"), p.get("rate_limit_per_s"), p.get("max_in_flight"), p.get("price_per_1k"))
        for p in listing.get("plans", [])
    ]
    lines.append(table(rows, ("plan", "monthly quota", "rate/s", "in flight", "price/1k")))
    return "\n".join(lines)


def _plan_names(listing: Listing) -> str:
    return ", ".join(p["name"] for p in listing.get("plans", []))


def _listing_usage_text(usage: ListingUsage) -> str:
    subscribers = [(s["organization"], s["calls"], s["revenue"]) for s in usage.get("subscribers", [])]
    plans = [
        (p["plan"] + (" (retired)" if p.get("retired") else ""), p.get("price_per_1k"), p.get("subscribers"),
         p["calls"], p["revenue"])
        for p in usage.get("plans", [])
    ]  # fmt: skip
    return "\n".join(
        (
            f"{usage['listing']} since {usage['since']}: {usage['calls']} calls, revenue {usage['revenue']}, "
            f"{usage.get('active_subscriptions', 0)} active subscriptions",
            "",
            table(subscribers, ("subscriber", "calls", "revenue")),
            "",
            table(plans, ("plan", "price/1k", "subscribers", "calls", "revenue")),
        )
    )


# --- API keys ---------------------------------------------------------------------------------
def keys_create(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        key = client.create_key(args.name, scopes=args.scopes or ("predict",), expires_at=args.expires_at)
    terminal.result(
        key,
        f"Created the key {key['name']} (id {key['id']}, scopes {', '.join(key.get('scopes', []))}, expires "
        f"{key.get('expires_at') or 'never'}). Its secret, shown only this once:\n{key['key']}",
    )


def keys_list(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        keys = [_without_secret(key) for key in client.list_keys()]
    rows = [
        (k["id"], k["name"], f"mb_{k['prefix']}_…", ",".join(k.get("scopes", [])), _day(k.get("created_at")),
         _day(k.get("expires_at")), _day(k.get("last_used_at")))
        for k in keys
    ]  # fmt: skip
    terminal.result(keys, lambda: table(rows, ("key", "name", "prefix", "scopes", "created", "expires", "last used")))


def keys_revoke(args: argparse.Namespace, terminal: Terminal) -> None:
    with _client(args) as client:
        client.revoke_key(args.id)
    terminal.result({"id": args.id, "revoked": True}, f"Revoked the key {args.id}: it answers 401 from now on.")


def _without_secret(key: ApiKey) -> ApiKey:
    """A listed key never carries its secret; should an answer ever hold one, it is not printed."""
    return {name: value for name, value in key.items() if name != "key"}  # type: ignore[return-value]


def _day(timestamp: str | None) -> str | None:
    return timestamp[:10] if timestamp else None
