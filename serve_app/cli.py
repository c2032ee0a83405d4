"""``san-serve``: the web page and HTTP API on uvicorn.

    san-serve                                   # 127.0.0.1:8000, the default model, device auto
    san-serve --port 9000 --translate-weights runs/san_spade/ckpt/best.pt
    SAN_SERVE_TOKEN=... san-serve --host 0.0.0.0  # another machine may connect: a token is required

Binding an address other than loopback without ``--token`` (or ``$SAN_SERVE_TOKEN``) is refused unless
``--insecure`` says so. Usage errors and models that cannot be loaded exit 2 in one line; a port in use
exits 1. Ctrl-C stops the server: jobs are cancelled and every temporary file is removed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

__all__ = ["main"]


def _positive(kind=float, low: float = 0.0):
    def parse(text: str):
        import math

        try:
            value = kind(float(text)) if kind is int else kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value <= low:
            raise argparse.ArgumentTypeError(f"must be a finite number > {low:g}, got {text!r}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    from gan_core.version import add_version_argument
    from sr_app.cli_args import add_weights_dir_argument

    p = argparse.ArgumentParser(
        prog="san-serve",
        description="Serve upscaling (and label-to-image synthesis) as a web page and an HTTP API "
        "(OpenAPI page at /docs). One inference at a time; a bounded queue answers 429 when full.",
    )
    add_version_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("-n", "--model", metavar="NAME", help="SR model name from weights/manifest.json (default model)")
    p.add_argument("--weights", type=Path, metavar="PATH",
                   help="SR model file: .safetensors (+ .json), sr-train .pt, a community .pth")  # fmt: skip
    add_weights_dir_argument(p)
    p.add_argument("--translate-weights", type=Path, metavar="PATH",
                   help="translate-train checkpoint, SPADE's latest_net_G.pth or a translate-export file: "
                   "enables /v1/synthesize and the synthesis tab")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--max-pixels", type=_positive(), default=16e6,
                   help="refuse inputs above this many pixels (16e6), and outputs above it x scale^2")  # fmt: skip
    p.add_argument("--max-upload-mb", type=_positive(), default=64.0, help="largest request body in MiB (64)")
    p.add_argument("--niqe-max-mp", type=_positive(low=-1e-9), default=4.0,
                   help="NIQE only for outputs up to this many megapixels (4; 0 = never)")  # fmt: skip
    p.add_argument("--workers-queue", type=_positive(int), default=16, metavar="N",
                   help="jobs admitted at once (queued + running); more get 429 + Retry-After (16)")  # fmt: skip
    p.add_argument("--result-ttl", type=_positive(), default=900.0, metavar="S",
                   help="seconds a finished job's result is kept before its files are removed (900)")  # fmt: skip
    p.add_argument("--upload-timeout", type=_positive(), default=10.0, metavar="S",
                   help="408 when an upload sends nothing for S seconds (10)")  # fmt: skip
    p.add_argument("--token", default=None,
                   help="require 'Authorization: Bearer TOKEN' on the API (default $SAN_SERVE_TOKEN); needed to "
                   "bind a non-loopback address")  # fmt: skip
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback address without a token")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="info")
    return p


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (so port 0 gets a real port before the URL is printed); OSError when taken."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    from .config import LOOPBACK_NAMES, ServeSettings, is_loopback

    parser = _parser()
    args = parser.parse_args(argv)
    from sr_app.cli import MODEL_LOAD_ERRORS, apply_weights_dir

    apply_weights_dir(parser, args.weights_dir)
    if args.weights is not None and args.model is not None:
        parser.error("give --weights or -n/--model, not both")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535, got {args.port}")
    token = args.token if args.token is not None else os.environ.get("SAN_SERVE_TOKEN") or None
    loopback = is_loopback(args.host)
    if not loopback and token is None and not args.insecure:
        print(f"san-serve: refusing to bind {args.host}: other machines could use it without a token; give --token "
              "TOKEN (or $SAN_SERVE_TOKEN), or --insecure if the network is trusted", file=sys.stderr)  # fmt: skip
        return 2
    if token is not None and len(token) < 8:
        parser.error("--token must have at least 8 characters (e.g. python -c 'import secrets; "
                     "print(secrets.token_urlsafe())')")  # fmt: skip
    settings = ServeSettings(
        max_pixels=int(args.max_pixels), max_upload_bytes=int(args.max_upload_mb * 2**20),
        queue_size=args.workers_queue, niqe_max_pixels=int(args.niqe_max_mp * 1e6), result_ttl=args.result_ttl,
        upload_idle_timeout=args.upload_timeout, token=token,
        allowed_hosts=(*LOOPBACK_NAMES, args.host.strip("[]")) if loopback else None,
    )  # fmt: skip

    from sr_app.infer import Upscaler

    try:
        upscaler = Upscaler.from_pretrained(args.weights or args.model, args.device, args.precision)
    except MODEL_LOAD_ERRORS as e:
        print(f"san-serve: cannot load the SR model: {e}", file=sys.stderr)
        return 2
    synthesizer = None
    if args.translate_weights is not None:
        from translate_app.infer import Synthesizer

        try:
            precision = args.precision if args.precision in ("auto", "fp32", "bf16") else "auto"  # no fp16 for SPADE
            synthesizer = Synthesizer.from_checkpoint(args.translate_weights, args.device, precision)
        except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
            print(f"san-serve: cannot load the translate model: {e}", file=sys.stderr)
            return 2
    try:
        sock = _bind(args.host, args.port)
    except OSError as e:
        print(f"san-serve: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    return _serve(sock, args, settings, upscaler, synthesizer)


def _serve(sock: socket.socket, args, settings, upscaler, synthesizer) -> int:
    import uvicorn

    from .app import create_app

    def log(msg: str) -> None:
        print(f"san-serve: {msg}", file=sys.stderr)

    app = create_app(settings, upscaler, synthesizer, log)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    synth = f"; synthesis {Path(synthesizer.name).name}" if synthesizer is not None else "; synthesis off"
    token = "; token required" if settings.token else ""
    print(f"san-serve: model {upscaler.name} (x{upscaler.scale}) on {upscaler.device}, {upscaler.precision_name}"
          f"{synth}; queue {settings.queue_size}{token}", file=sys.stderr)  # fmt: skip
    print(f"san-serve: http://{shown}:{port}/  (API docs: http://{shown}:{port}/docs; Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, timeout_keep_alive=5, limit_concurrency=1000,
                            timeout_graceful_shutdown=10, server_header=False)  # fmt: skip
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
