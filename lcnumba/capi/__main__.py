"""``python -m lcnumba.capi header [--write]``: print (or write) the generated ``lcnumba.h``.

``names`` lists the entry points, ``compile`` compiles them all (filling the
on-disk cache of the cores) and reports the time.
"""

import argparse
import pathlib
import sys
import time

from . import compile_all, header, include_dir, names


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lcnumba.capi", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    head = sub.add_parser("header", help="print the generated lcnumba.h")
    head.add_argument("--write", action="store_true", help="write it to lcnumba/capi/lcnumba.h instead")
    sub.add_parser("names", help="list the entry points")
    sub.add_parser("compile", help="compile every entry point")
    args = parser.parse_args(argv)
    if args.command == "header":
        text = header()
        if args.write:
            path = pathlib.Path(include_dir()) / "lcnumba.h"
            path.write_text(text)
            print(f"wrote {path}")
        else:
            sys.stdout.write(text)
    elif args.command == "names":
        print("\n".join(names()))
    else:
        start = time.perf_counter()
        done = compile_all()
        print(f"compiled {len(done)} entry points in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
