"""`ganbench bench`: throughput of the scorer beside the alternatives."""
from __future__ import annotations

import sys

from ganbench.cli.common import add_data_options, check_out, json_text, print_json, require_at_least
from ganbench.devices import resolve_device


def command_bench(args) -> int:
    from ganbench import atomic, data
    from ganbench.paper import bench

    require_at_least("--repeats", args.repeats, 1)
    device = str(resolve_device(args.device))
    if args.out:
        check_out(args.out, folder=False)
    cases = bench.QUICK_CASES if args.quick else bench.DEFAULT_CASES
    report = bench.run_report(cases, data.load_mnist(args.data_dir), device, args.repeats,
                              " ".join(["ganbench"] + sys.argv[1:]), peers=not args.no_peers)
    if args.out:
        atomic.write_text(args.out, json_text(report))  # as stdout prints it: null, not a bare NaN, for no number
    if args.json:
        print_json(report)
    else:
        print(bench.format_report(report))
    return 0


def add_parsers(commands, formatter) -> None:
    bench_parser = commands.add_parser("bench", help="throughput of the scorer beside the alternatives",
                                       formatter_class=formatter)
    bench_parser.add_argument("--quick", action="store_true", help="only the 1,000 x 1,000 cases")
    bench_parser.add_argument("--no-peers", action="store_true",
                              help="leave out the torch.compile'd naive code and KeOps (each compiles on first use)")
    bench_parser.add_argument("--repeats", type=int, default=3, help="timed repeats per method (median)")
    bench_parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    bench_parser.add_argument("--out", default=None, help="write the JSON report here (e.g. results/bench-cpu.json)")
    bench_parser.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    add_data_options(bench_parser)
    bench_parser.set_defaults(handler=command_bench)
