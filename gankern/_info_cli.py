"""`gankern info`."""
import json


def add_parsers(sub):
    p = sub.add_parser("info", help="versions, GPU, and which backends are available (and why not)")
    p.add_argument("--json", action="store_true", help="print the same facts as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ._info import format_info, info
    d = info()
    print(json.dumps(d, indent=2) if args.json else format_info(d))
    return 0
