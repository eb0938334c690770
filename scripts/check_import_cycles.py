"""`make lint`: fail on any import cycle between the project's modules, imports inside functions included.

grimp (import-linter's graph library) builds the graph; a cycle is a module that can reach itself.
import-linter's contracts (layers, forbidden, independence) state allowed directions between named
packages; "no cycle anywhere" is simpler to state as this graph check.
"""

from __future__ import annotations

import sys

import grimp

PACKAGES = ("sentencify", "consumer", "sentencify_airflow")


def cycles(graph) -> list[list[str]]:
    found, seen = [], set()
    for module in sorted(graph.modules):
        if module in seen:
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                cycle = [module, *chain]
                seen.update(cycle)
                found.append(cycle)
                break
    return found


def main() -> int:
    sys.path[:0] = ["plugins"]
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    for package in PACKAGES:  # a package's __init__ re-exporting its modules is not a cycle
        for module in graph.find_children(package) if package in graph.modules else ():
            if graph.direct_import_exists(importer=module, imported=package):
                graph.remove_import(importer=module, imported=package)
    found = cycles(graph)
    for cycle in found:
        print("import cycle: " + " -> ".join(cycle), file=sys.stderr)
    if found:
        print(f"{len(found)} import cycle(s): move the shared part into a module both can import", file=sys.stderr)
        return 1
    print(f"no import cycles among {len(graph.modules)} modules of {', '.join(PACKAGES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
