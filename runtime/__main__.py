"""``python -m runtime --model-dir DIR --port P [--credential-file PATH] [...]``.

Every option can also come from the environment (``MODELBAY_RUNTIME_MODEL_DIR``,
``_PORT``, ``_HOST``, ``_NAME``, ``_MODEL_VERSION``, ``_INSTANCE_ID``,
``_CREDENTIAL_FILE``, ``_UDS``); the command line wins. The credential itself is only ever read
from its file, never from the command line or the environment.
Tuning: ``MODELBAY_RUNTIME_THREADS`` (onnxruntime intra-op threads, default 1),
``MODELBAY_RUNTIME_WORKERS`` (thread pool for python/sklearn models, default 4),
``MODELBAY_RUNTIME_MAX_BODY`` (bytes, default 64 MiB), ``MODELBAY_RUNTIME_BATCHING``
(``0`` turns off dynamic batching of concurrent ONNX requests).
"""

from __future__ import annotations

import argparse
import os
import sys


def _env(name: str, default=None):
    value = os.environ.get(f"MODELBAY_RUNTIME_{name}")
    return value if value not in (None, "") else default


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime", description="Modelbay model runtime server")
    parser.add_argument("--model-dir", default=_env("MODEL_DIR"), help="model package directory")
    parser.add_argument("--port", type=int, default=int(_env("PORT", 8080)))
    parser.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    parser.add_argument(
        "--uds", default=_env("UDS"), help="listen on this Unix socket instead of --host/--port (no network needed)"
    )
    parser.add_argument("--name", default=_env("NAME", "model"), help="model name in OIP paths")
    parser.add_argument("--model-version", type=int, default=int(_env("MODEL_VERSION", 1)))
    parser.add_argument(
        "--instance-id",
        default=_env("INSTANCE_ID"),
        help="the instance this runtime serves, named in every answer's X-Modelbay-Instance header"
        " (a 'namespace/' prefix is left out of the header)",
    )
    parser.add_argument(
        "--credential-file",
        default=_env("CREDENTIAL_FILE"),
        help="file holding the credential every call must carry (Authorization: Bearer ...);"
        " without it the runtime answers anyone (development only)",
    )
    args = parser.parse_args(argv)
    if not args.model_dir:
        parser.error("--model-dir (or MODELBAY_RUNTIME_MODEL_DIR) is required")
    if not os.path.isdir(args.model_dir):
        # Still start: readiness will report the problem. Warn right away too.
        print(f"modelbay-runtime: warning: model directory {args.model_dir!r} does not exist", file=sys.stderr)

    from .server import read_credential, serve

    if args.credential_file:
        credential = read_credential(args.credential_file)
    else:
        credential = None
        print(
            "modelbay-runtime: WARNING: no --credential-file: this runtime answers every caller without"
            " authentication. Use this only on a developer machine; the control plane always gives one.",
            file=sys.stderr,
        )
    # The local backend's marker is "namespace/instance-id": answers name the instance alone.
    instance_id = args.instance_id.rsplit("/", 1)[-1] if args.instance_id else None

    serve(
        args.model_dir,
        host=args.host,
        port=args.port,
        name=args.name,
        version=args.model_version,
        credential=credential,
        instance_id=instance_id,
        uds=args.uds,
    )


if __name__ == "__main__":
    main()
