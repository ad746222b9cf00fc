"""The `patchbay` command line (also installed as the kubectl plugin `kubectl-patchbay`)."""

from __future__ import annotations

import argparse

from patchbay import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchbay",
        description="Manage and verify connections to external data systems on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"patchbay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument(
        "--peering",
        metavar="NAME",
        help="coordinate with other replicas through this kopf peering object "
        "(default: standalone)",
    )
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--log-format", default="json", choices=["json", "text"])
    run.add_argument(
        "--egress-deny",
        action="append",
        default=[],
        metavar="CIDR",
        help="also deny verification traffic to this network (repeatable); link-local and "
        "cloud metadata addresses are always denied",
    )
    run.add_argument(
        "--egress-allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="allow verification traffic only to these networks (repeatable)",
    )
    run.add_argument("--max-concurrent", type=int, default=64, help="verifications running at once")
    run.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's liveness probe at this URL, e.g. http://0.0.0.0:8081/healthz",
    )
    return parser


def run_operator(args: argparse.Namespace) -> int:
    import kopf

    import patchbay.controller.handlers  # noqa: F401  (registers the handlers)
    from patchbay.egress import DEFAULT_DENIED, EgressPolicy, parse_networks
    from patchbay.logs import configure_logging
    from patchbay.reconciler import OperatorSettings

    configure_logging(args.log_level, args.log_format == "json")
    settings = OperatorSettings(
        max_concurrent_verifications=args.max_concurrent,
        egress=EgressPolicy(
            denied=DEFAULT_DENIED + parse_networks(args.egress_deny),
            allowed=parse_networks(args.egress_allow),
        ),
    )
    kopf.run(
        clusterwide=args.all_namespaces or not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(settings=settings),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_operator(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
