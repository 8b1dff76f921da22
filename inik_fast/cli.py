"""The `inik-fast` command line."""
from __future__ import annotations

import argparse
import sys


def cmd_info(args) -> int:
    """Print the build (torch, compiled CUDA archs) and the backends available per device."""
    import torch

    from . import __version__, _extension, backends

    info = _extension.build_info()
    print(f"inik_fast {__version__}, torch {torch.__version__} (CUDA {torch.version.cuda})")
    print(f"extension: {'built' if info['built'] else 'not built: ' + info['error']}")
    print(f"compiled CUDA archs: {info['cuda_archs'] or 'none'}")
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    for dev in devices:
        for b in backends.BACKENDS:
            reasons = backends.not_supported_reasons(b, dev)
            print(f"  {dev:8s} {b:10s} {'available' if not reasons else 'unavailable: ' + '; '.join(reasons)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inik-fast", description="INIKNet defocus deblurring with fused ops")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help=cmd_info.__doc__).set_defaults(func=cmd_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
