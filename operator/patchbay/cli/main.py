"""The `patchbay` command line (also installed as the kubectl plugin `kubectl-patchbay`)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TextIO

import aiohttp

from patchbay import __version__, kube
from patchbay.cli import discovery, listing, manage, output
from patchbay.cli.caller import CommandError, load_caller_config
from patchbay.cli.output import OUTPUT_FORMATS, View
from patchbay.core.egress import DEFAULT_DENIED, EgressPolicy, parse_networks
from patchbay.core.schedule import parse_duration
from patchbay.drivers import available_drivers
from patchbay.drivers.base import MAX_ROWS, SelectionLimits


def add_egress_flags(parser: argparse.ArgumentParser, traffic: str) -> None:
    parser.add_argument(
        "--egress-deny",
        action="append",
        default=[],
        metavar="CIDR",
        help=f"also deny {traffic} traffic to this network (repeatable); link-local and "
        "cloud metadata addresses are always denied",
    )
    parser.add_argument(
        "--egress-allow",
        action="append",
        default=[],
        metavar="CIDR",
        help=f"allow {traffic} traffic only to these networks (repeatable)",
    )


def egress_policy(args: argparse.Namespace) -> EgressPolicy:
    return EgressPolicy(
        denied=DEFAULT_DENIED + parse_networks(args.egress_deny),
        allowed=parse_networks(args.egress_allow),
    )


def row_count(text: str) -> int:
    try:
        rows = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= rows <= MAX_ROWS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_ROWS}")
    return rows


def size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def seconds(text: str) -> float:
    """'90', '90s' or '2m'."""
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration such as 90s or 2m: {text!r}") from None


def list_limit(text: str) -> int:
    value = size(text)
    if not 1 <= value <= listing.MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {listing.MAX_LIMIT}")
    return value


def bounded_text(text: str) -> str:
    if len(text) > listing.MAX_SEARCH:
        raise argparse.ArgumentTypeError(f"at most {listing.MAX_SEARCH} characters")
    return text


def secret_reference(text: str) -> tuple[str, str]:
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {text!r}")
    return namespace, name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchbay",
        description="Manage and verify connections to external data systems on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"patchbay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    add_egress_flags(run, "verification")
    run.add_argument(
        "--max-concurrent", type=int, default=256, help="verifications running at once"
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve Prometheus metrics on this port at /metrics (0: off)",
    )
    run.add_argument(
        "--metrics-host", default="0.0.0.0", metavar="ADDRESS", help="address the metrics bind to"
    )
    run.add_argument(
        "--webhook-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve the validating admission webhook over HTTPS on this port (0: off)",
    )
    run.add_argument(
        "--webhook-host", default="0.0.0.0", metavar="ADDRESS", help="address the webhook binds to"
    )
    run.add_argument(
        "--webhook-cert", metavar="FILE", help="PEM serving certificate of the webhook"
    )
    run.add_argument("--webhook-key", metavar="FILE", help="PEM private key of the webhook")
    run.add_argument(
        "--admission-key",
        metavar="NAMESPACE/NAME",
        type=secret_reference,
        help="Secret with the key of admission records (created when absent); needed "
        "with --webhook-port. Without it, a Connection may use only Secrets that allow "
        "it by annotation",
    )
    run.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's liveness probe at this URL, e.g. http://0.0.0.0:8081/healthz",
    )

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-n", "--namespace", help="namespace of the Connection (default: the context's)"
    )
    common.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    common.add_argument("--context", help="kubeconfig context to use")
    common.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table")
    browsing = argparse.ArgumentParser(add_help=False, parents=[common])
    add_egress_flags(browsing, "discovery")

    def command(
        name: str, help: str, handler: Handler, parents: list[argparse.ArgumentParser]
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, parents=parents)
        sub.add_argument("connection", metavar="NAME", help="the Connection")
        sub.set_defaults(handler=handler)
        return sub

    lister = commands.add_parser(
        "list",
        help="list Connections, filtered by the API server where it can",
        description="List Connections. --connector, --phase and --reason filter with field "
        "selectors and --driver with a label selector at the API server; --search and --sort "
        "run on what it returns.",
        parents=[common],
    )
    lister.add_argument(
        "-A", "--all-namespaces", action="store_true", help="list in every namespace"
    )
    lister.add_argument("--connector", help="the connector's name (Connector or ClusterConnector)")
    lister.add_argument("--driver", help="the driver, e.g. postgres")
    lister.add_argument("--phase", choices=["Pending", "Ready", "Failed", "Suspended"])
    lister.add_argument("--reason", help="the Ready reason, e.g. AuthenticationFailed")
    lister.add_argument("--search", type=bounded_text, help="text in the name or the display name")
    lister.add_argument(
        "--sort",
        default="name",
        choices=[f"{prefix}{field}" for field in listing.SORT_FIELDS for prefix in ("", "-")],
        help="order by this field; a leading '-' sorts descending (default: name)",
    )
    lister.add_argument("--limit", type=list_limit, help="at most this many")
    lister.add_argument("--continue", dest="continue_token", help="the token of the next page")
    lister.set_defaults(handler=list_command, connection=None)
    command(
        "describe",
        "show status, config, checks and secret fields (never secret values)",
        describe_command,
        [common],
    )
    verify = command("verify", "ask the operator to verify now", verify_command, [common])
    verify.add_argument("--wait", action="store_true", help="wait for the result and show it")
    verify.add_argument(
        "--timeout", type=seconds, default=120.0, help="how long --wait waits (default 2m)"
    )
    command("suspend", "stop every call to the external system", suspend_command, [common])
    command("resume", "resume verification after suspend", resume_command, [common])
    command(
        "set-default",
        "make this the default Connection of its connector in the namespace "
        "(the others of that connector stop being default)",
        set_default_command,
        [common],
    )
    tables = command("tables", "list tables and views", tables_command, [browsing])
    tables.add_argument(
        "--include-system", action="store_true", help="also list system schemas' tables"
    )
    columns = command("columns", "list a table's columns", columns_command, [browsing])
    columns.add_argument("table", metavar="SCHEMA.TABLE")
    sample = command("sample", "show some rows of a table", sample_command, [browsing])
    sample.add_argument("table", metavar="SCHEMA.TABLE")
    sample.add_argument("--rows", type=row_count, default=10, help="at most this many (default 10)")
    query = command(
        "query", "run one read-only SQL statement (a write fails)", query_command, [browsing]
    )
    query.add_argument("sql", metavar="SQL")
    query.add_argument(
        "--max-rows", type=row_count, default=100, help="at most this many rows (default 100)"
    )
    files = command("files", "list files and directories", files_command, [browsing])
    files.add_argument("path", metavar="PATH", nargs="?", default="", help="default: the root")
    files.add_argument("--page-token", help="the token printed with the previous page")
    selection = command(
        "validate-selection",
        "count the files under the given paths and check them against limits",
        validate_selection_command,
        [browsing],
    )
    selection.add_argument("paths", metavar="PATH", nargs="+")
    selection.add_argument("--max-items", type=size, help="at most this many files")
    selection.add_argument("--max-bytes", type=size, help="at most this many bytes in total")
    selection.add_argument("--max-depth", type=size, help="at most this many directory levels")
    return parser


def run_operator(args: argparse.Namespace) -> int:
    import kopf

    import patchbay.controller.handlers  # noqa: F401  (registers the handlers)
    from patchbay.controller.connection import OperatorSettings
    from patchbay.logs import configure_logging

    if args.webhook_port and not (args.webhook_cert and args.webhook_key and args.admission_key):
        print(
            "patchbay run: --webhook-port needs --webhook-cert, --webhook-key and --admission-key",
            file=sys.stderr,
        )
        return 2
    configure_logging(args.log_level, args.log_format == "json")
    if args.webhook_port:
        importlib.import_module("patchbay.controller.admission")  # registers the webhook
    settings = OperatorSettings(
        max_concurrent_verifications=args.max_concurrent,
        egress=egress_policy(args),
    )
    # The replica started first ranks highest, so a new pod of a rollout stands by until
    # the old one leaves; equal priorities would make every replica pause.
    priority = -(time.time_ns() // 1000)
    kopf.run(
        clusterwide=args.all_namespaces or not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=priority,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(
            settings=settings,
            namespaces=args.namespace or None,
            peering=(args.peering, priority) if args.peering else None,
            metrics_address=(args.metrics_host, args.metrics_port) if args.metrics_port else None,
            admission_key=args.admission_key,
            webhook=kopf.WebhookServer(
                addr=args.webhook_host,
                port=args.webhook_port,
                certfile=args.webhook_cert,
                pkeyfile=args.webhook_key,
            )
            if args.webhook_port
            else None,
        ),
    )
    return 0


# ----- management and discovery, as the caller ------------------------------------------

Result = tuple[object, View, int]  # data, its table view, exit code
Handler = Callable[[argparse.Namespace, kube.KubeClient, str], Awaitable[Result]]


class Progress:
    """A spinner on stderr while waiting; one plain line when stderr is not a terminal."""

    FRAMES = "|/-\\"

    def __init__(self, text: str, stream: TextIO = sys.stderr) -> None:
        self.text = text
        self.stream = stream
        self.live = stream.isatty()
        self.frame = 0

    def __enter__(self) -> Progress:
        if not self.live:
            print(f"{self.text} ...", file=self.stream, flush=True)
        return self

    def tick(self, elapsed: float) -> None:
        if self.live:
            self.frame = (self.frame + 1) % len(self.FRAMES)
            self.stream.write(f"\r{self.FRAMES[self.frame]} {self.text} ({elapsed:.0f}s)")
            self.stream.flush()

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.stream.write("\r\033[K")  # clear the spinner's line
            self.stream.flush()


async def list_command(args: argparse.Namespace, client: kube.KubeClient, ns: str) -> Result:
    query = listing.ListQuery(
        namespace=None if args.all_namespaces else ns,
        connector=args.connector,
        driver=args.driver,
        phase=args.phase,
        reason=args.reason,
        search=args.search,
        sort=args.sort,
    )
    data = await listing.list_connections(client, query, args.limit, args.continue_token)
    return data, output.list_view, 0


async def describe_command(args: argparse.Namespace, client: kube.KubeClient, ns: str) -> Result:
    return await manage.describe(client, ns, args.connection), output.describe_view, 0


async def verify_command(args: argparse.Namespace, client: kube.KubeClient, ns: str) -> Result:
    requested = await manage.request_verification(client, ns, args.connection)
    if not args.wait:
        data = {"name": args.connection, "namespace": ns, "requestedAt": requested}
        return data, output.verify_requested_view, 0
    with Progress(f"waiting for connection/{args.connection} to be verified") as progress:
        described = await manage.wait_for_verification(
            client, ns, args.connection, requested, args.timeout, progress.tick
        )
    succeeded = described["verification"]["result"] == "Succeeded"
    return described, output.describe_view, 0 if succeeded else 1


async def suspend_command(args: argparse.Namespace, client: kube.KubeClient, ns: str) -> Result:
    return await manage.set_suspend(client, ns, args.connection, True), output.suspend_view, 0


async def resume_command(args: argparse.Namespace, client: kube.KubeClient, ns: str) -> Result:
    return await manage.set_suspend(client, ns, args.connection, False), output.suspend_view, 0


async def set_default_command(args: argparse.Namespace, client: kube.KubeClient, ns: str) -> Result:
    return await manage.set_default(client, ns, args.connection), output.set_default_view, 0


async def _target(
    args: argparse.Namespace, client: kube.KubeClient, ns: str, capability: discovery.Capability
) -> discovery.Target:
    return await discovery.resolve_target(
        client, ns, args.connection, available_drivers(), capability
    )


async def tables_command(args: argparse.Namespace, client: kube.KubeClient, ns: str) -> Result:
    target = await _target(args, client, ns, "sql")
    data = await discovery.tables(target, egress_policy(args), args.include_system)
    return data, output.tables_view, 0


async def columns_command(args: argparse.Namespace, client: kube.KubeClient, ns: str) -> Result:
    schema, table = discovery.split_table_name(args.table)
    target = await _target(args, client, ns, "sql")
    data = await discovery.columns(target, egress_policy(args), schema, table)
    return data, output.columns_view, 0


async def sample_command(args: argparse.Namespace, client: kube.KubeClient, ns: str) -> Result:
    schema, table = discovery.split_table_name(args.table)
    target = await _target(args, client, ns, "sql")
    data = await discovery.sample(target, egress_policy(args), schema, table, args.rows)
    return data, output.rows_view, 0


async def query_command(args: argparse.Namespace, client: kube.KubeClient, ns: str) -> Result:
    discovery.check_sql(args.sql)  # before anything is contacted
    target = await _target(args, client, ns, "sql")
    data = await discovery.query(target, egress_policy(args), args.sql, args.max_rows)
    return data, output.rows_view, 0


async def files_command(args: argparse.Namespace, client: kube.KubeClient, ns: str) -> Result:
    target = await _target(args, client, ns, "files")
    data = await discovery.files(target, egress_policy(args), args.path, args.page_token)
    return data, output.files_view, 0


async def validate_selection_command(
    args: argparse.Namespace, client: kube.KubeClient, ns: str
) -> Result:
    target = await _target(args, client, ns, "files")
    limits = SelectionLimits(args.max_items, args.max_bytes, args.max_depth)
    data = await discovery.validate_selection(target, egress_policy(args), args.paths, limits)
    return data, output.selection_view, 1 if data["violations"] else 0


async def run_command(args: argparse.Namespace) -> int:
    caller = load_caller_config(args.kubeconfig, args.context)
    namespace = args.namespace or caller.namespace
    server = caller.configuration.host
    client = kube.KubeClient(caller.configuration)
    handler: Handler = args.handler
    try:
        data, view, code = await handler(args, client, namespace)
    except aiohttp.ClientError as exc:
        raise CommandError(f"cannot reach the API server at {server}: {exc}") from None
    except TimeoutError:
        raise CommandError(f"the API server at {server} did not answer in time") from None
    except kube.KubeApiError as exc:
        raise CommandError(f"the API server refused: {exc}") from None
    finally:
        await client.close()
    print(output.render(data, args.output, view))
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_operator(args)
    try:
        return asyncio.run(run_command(args))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
