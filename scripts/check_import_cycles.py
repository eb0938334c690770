"""`make lint`: fail on any import cycle between the project's modules, imports inside functions
included, and on any import against the layering (FORBIDDEN).

grimp (import-linter's graph library) builds the graph; a cycle is a module that can reach itself.
The layering is import-linter's "forbidden" contract, checked on the same graph: the consumer and
the chain's steps share only what lies below both (`sentencify.contract`, schemas, settings), so
neither is changed, tested or deployed through the other.
"""

from __future__ import annotations

import sys

import grimp

PACKAGES = ("sentencify", "consumer", "sentencify_airflow")
# importer -> what it must not reach, directly or through other modules
FORBIDDEN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("consumer", ("sentencify.steps", "sentencify.verify", "sentencify.erasure.forget")),
    ("sentencify.steps", ("consumer",)),
)


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


def layering(graph) -> list[tuple[str, ...]]:
    """Every shortest chain by which an importer of FORBIDDEN reaches what it must not."""
    found = []
    for importer, banned in FORBIDDEN:
        for imported in banned:
            found += sorted(graph.find_shortest_chains(importer=importer, imported=imported, as_packages=True))
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
    against = layering(graph)
    for chain in against:
        print("import against the layering: " + " -> ".join(chain), file=sys.stderr)
    if against:
        print(f"{len(against)} forbidden import(s): move the shared names into sentencify.contract", file=sys.stderr)
    if found or against:
        return 1
    print(f"no import cycles among {len(graph.modules)} modules of {', '.join(PACKAGES)}; layering kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
