"""An offline stand-in for ``terraform validate``.

``terraform init`` cannot download providers without the network, so ``validate`` cannot run in
the test suite. This module parses a Terraform module with python-hcl2 and checks it against the
provider schemas kept in ``tests/terraform_schema/`` (a subset of the full schemas; see
``subset``): resource and data types, arguments, nested blocks, required arguments and blocks,
single blocks given twice, documented enum values, attribute references, variables, locals,
module inputs and outputs, and the provider version constraints.

It does not type-check expressions or evaluate them: values known only at plan time stay unchecked.

Usage::

    python tests/tfcheck.py check terraform terraform/examples/basic
    python tests/tfcheck.py subset --source PATH/TO/terraform-schema   # rewrite the subset
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

SCHEMA_DIR = Path(__file__).parent / "terraform_schema"
PROVIDERS = ("google", "archive", "random")

# Accepted by every resource or data block; Terraform handles them, not the provider.
RESOURCE_META = {
    "count",
    "for_each",
    "depends_on",
    "lifecycle",
    "provider",
    "provisioner",
    "connection",
}
LIFECYCLE_KEYS = {
    "create_before_destroy",
    "prevent_destroy",
    "ignore_changes",
    "replace_triggered_by",
    "precondition",
    "postcondition",
}
MODULE_META = {"source", "version", "providers", "count", "for_each", "depends_on"}
TOP_LEVEL = {
    "terraform",
    "variable",
    "locals",
    "output",
    "resource",
    "data",
    "module",
    "provider",
    "check",
    "moved",
    "import",
    "removed",
}
# Roots of references that need no declaration.
BUILTIN_ROOTS = {"path", "terraform", "each", "count", "self"}


# --------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------


class Schemas:
    """Provider schemas by provider name, in the format of the shared schema files."""

    def __init__(self, by_provider: dict[str, dict[str, Any]]):
        self.by_provider = by_provider

    @classmethod
    def load(cls, directory: Path = SCHEMA_DIR) -> Schemas:
        found = {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}
        return cls(found)

    def provider_of(self, type_name: str) -> str | None:
        prefix = type_name.split("_", 1)[0]
        return prefix if prefix in self.by_provider else None

    def block_type(self, kind: str, type_name: str) -> dict[str, Any] | None:
        provider = self.provider_of(type_name)
        if provider is None:
            return None
        return self.by_provider[provider].get(kind, {}).get(type_name)

    def names(self, kind: str) -> list[str]:
        return [n for s in self.by_provider.values() for n in s.get(kind, {})]


# --------------------------------------------------------------------------------------------
# Parsing: python-hcl2 gives literals as '"text"', expressions as '${…}', blocks as lists of
# dicts marked __is_block__ and labels as quoted keys.
# --------------------------------------------------------------------------------------------


def unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def literal(value: Any) -> str | None:
    """The text of a plain string literal, or None for anything computed."""
    if isinstance(value, str) and value.startswith('"') and value.endswith('"'):
        inner = value[1:-1]
        if "${" not in inner and "%{" not in inner:
            return inner
    return None


def is_block_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and v.get("__is_block__") for v in value)
    )


def body_items(body: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    return ((k, v) for k, v in body.items() if not k.startswith("__"))


def labelled(blocks: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """('label', body) pairs of a one-label block type such as variable or output."""
    for block in blocks:
        for label, body in body_items(block):
            yield unquote(label), body


def twice_labelled(blocks: list[dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for block in blocks:
        for type_label, inner in body_items(block):
            for name_label, body in body_items(inner):
                yield unquote(type_label), unquote(name_label), body


# --------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------


def code_only(text: str) -> str:
    """The expression with string-literal text blanked out, interpolations kept, so that
    'roles/run.invoker' is not read as a reference but "${var.x}" inside a string is."""
    out: list[str] = []
    _scan_code(text, 0, out, nested=False)
    return "".join(out)


def _scan_code(text: str, i: int, out: list[str], nested: bool) -> int:
    depth = 0
    while i < len(text):
        char = text[i]
        if char == '"':
            out.append(" ")
            i = _scan_string(text, i + 1, out)
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0 and nested:
                out.append(" ")
                return i + 1
            depth -= 1
        out.append(char)
        i += 1
    return i


def _scan_string(text: str, i: int, out: list[str]) -> int:
    while i < len(text):
        char = text[i]
        if char == "\\":
            out.append("  ")
            i += 2
        elif char in "$%" and text.startswith("{", i + 1):
            out.append("  ")
            i = _scan_code(text, i + 2, out, nested=True)
        elif char == '"':
            out.append(" ")
            return i + 1
        else:
            out.append(" ")
            i += 1
    return i


_ROOT = re.compile(r"(?<![\w.\-:])([A-Za-z_][\w-]*)")


def traversals(expression: str) -> Iterator[list[str]]:
    """Each reference in an expression as its segments: 'google_x.y[0].z' → [google_x, y, [], z].
    Index keys become '[]' (their own references are found separately)."""
    code = code_only(expression)
    for match in _ROOT.finditer(code):
        end = match.end()
        if code[end : end + 1] == "(" or code[end : end + 2] == "::":
            continue  # a function call
        yield [match.group(1), *_segments(code, end)]


def _segments(code: str, i: int) -> list[str]:
    segments: list[str] = []
    while i < len(code):
        if code[i] == ".":
            name = re.match(r"\*|[A-Za-z_][\w-]*|\d+", code[i + 1 :])
            if not name:
                break
            segments.append(
                "[]" if name.group(0) == "*" or name.group(0).isdigit() else name.group(0)
            )
            i += 1 + len(name.group(0))
        elif code[i] == "[":
            i = _matching_bracket(code, i) + 1
            segments.append("[]")
        else:
            break
    return segments


def _matching_bracket(code: str, i: int) -> int:
    depth = 0
    for j in range(i, len(code)):
        depth += {"[": 1, "]": -1}.get(code[j], 0)
        if depth == 0:
            return j
    return len(code)


def expressions(value: Any) -> Iterator[str]:
    """Every expression string inside a value (lists, objects and block bodies included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from expressions(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not key.startswith("__"):
                yield from expressions(item)


# --------------------------------------------------------------------------------------------
# A module, as parsed from its .tf files
# --------------------------------------------------------------------------------------------


@dataclass
class Item:
    where: str  # "main.tf: resource google_x.y"
    body: dict[str, Any]


@dataclass
class Module:
    path: Path
    terraform: list[Item] = field(default_factory=list)
    variables: dict[str, Item] = field(default_factory=dict)
    locals: dict[str, Item] = field(default_factory=dict)
    outputs: dict[str, Item] = field(default_factory=dict)
    resources: dict[tuple[str, str], Item] = field(default_factory=dict)
    data: dict[tuple[str, str], Item] = field(default_factory=dict)
    modules: dict[str, Item] = field(default_factory=dict)
    providers: list[tuple[str, Item]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def all_items(self) -> Iterator[Item]:
        yield from self.terraform
        for group in (
            self.variables,
            self.locals,
            self.outputs,
            self.resources,
            self.data,
            self.modules,
        ):
            yield from group.values()
        yield from (item for _, item in self.providers)


def load_module(path: Path) -> Module:
    module = Module(path)
    files = sorted(path.glob("*.tf"))
    if not files:
        module.problems.append(f"{path}: no .tf files")
    for file in files:
        try:
            parsed = _parse(file.read_text())
        except Exception as exc:  # the parser raises several unrelated types
            module.problems.append(f"{file.name}: does not parse: {exc}")
            continue
        _collect(module, file.name, parsed)
    return module


@functools.lru_cache(maxsize=64)
def _parse(text: str) -> dict[str, Any]:
    """Parse HCL text once: the grammar is slow and the same files are read by many tests.
    Callers must not change the result."""
    return hcl2.loads(text)


def _collect(module: Module, file: str, parsed: dict[str, Any]) -> None:
    for kind, blocks in body_items(parsed):
        if kind not in TOP_LEVEL:
            module.problems.append(f"{file}: unknown top-level block {kind!r}")
        elif kind == "terraform":
            module.terraform += [Item(f"{file}: terraform", b) for b in blocks]
        elif kind in ("variable", "output", "module"):
            target = {
                "variable": module.variables,
                "output": module.outputs,
                "module": module.modules,
            }[kind]
            for name, body in labelled(blocks):
                _add(module, target, name, Item(f"{file}: {kind} {name}", body))
        elif kind == "locals":
            for block in blocks:
                for name, value in body_items(block):
                    _add(module, module.locals, name, Item(f"{file}: local.{name}", {"v": value}))
        elif kind in ("resource", "data"):
            target = module.resources if kind == "resource" else module.data
            prefix = "" if kind == "resource" else "data."
            for type_name, name, body in twice_labelled(blocks):
                item = Item(f"{file}: {prefix}{type_name}.{name}", body)
                _add(module, target, (type_name, name), item)
        elif kind == "provider":
            module.providers += [(n, Item(f"{file}: provider {n}", b)) for n, b in labelled(blocks)]


def _add(module: Module, target: dict, key: Any, item: Item) -> None:
    if key in target:
        module.problems.append(f"{item.where}: declared twice (also {target[key].where})")
    target[key] = item


# --------------------------------------------------------------------------------------------
# Checking blocks against the schema
# --------------------------------------------------------------------------------------------


def check_body(body: dict[str, Any], schema: dict[str, Any], where: str, meta: bool) -> list[str]:
    """Arguments and nested blocks of one block body against its schema node."""
    problems: list[str] = []
    arguments, blocks = schema.get("arguments", {}), schema.get("blocks", {})
    present: dict[str, int] = {}
    for key, value in body_items(body):
        if meta and key in RESOURCE_META:
            problems += _check_meta(key, value, where)
        elif key == "dynamic":
            problems += _check_dynamic(value, blocks, where, present)
        elif is_block_list(value):
            problems += _check_blocks(key, value, arguments, blocks, where, present)
        else:
            problems += _check_argument(key, value, arguments, blocks, where)
            present[key] = present.get(key, 0) + 1
    return problems + _missing(arguments, blocks, present, where)


def _check_argument(key: str, value: Any, arguments: dict, blocks: dict, where: str) -> list[str]:
    if key in blocks:
        return [f"{where}: {key} is a block; write `{key} {{ … }}`, not `{key} = …`"]
    if key not in arguments:
        return [f"{where}: unknown argument {key!r}{_suggest(key, [*arguments, *blocks])}"]
    allowed, text = arguments[key].get("enum"), literal(value)
    if allowed and text is not None and text not in allowed:
        return [f"{where}: {key} = {text!r} is not one of {', '.join(allowed)}"]
    return []


def _check_blocks(
    key: str, value: list, arguments: dict, blocks: dict, where: str, present: dict[str, int]
) -> list[str]:
    if key in arguments:
        return [f"{where}: {key} is an argument; write `{key} = …`, not a block"]
    if key not in blocks:
        return [f"{where}: unknown block {key!r}{_suggest(key, [*blocks, *arguments])}"]
    present[key] = present.get(key, 0) + len(value)
    problems = []
    if blocks[key].get("max") == 1 and present[key] > 1:
        problems.append(f"{where}: block {key} may appear only once, found {present[key]}")
    for block in value:
        problems += check_body(block, blocks[key], f"{where} > {key}", meta=False)
    return problems


def _check_dynamic(value: list, blocks: dict, where: str, present: dict[str, int]) -> list[str]:
    problems = []
    for name, body in labelled(value):
        if name not in blocks:
            problems.append(f"{where}: unknown dynamic block {name!r}{_suggest(name, blocks)}")
            continue
        present[name] = present.get(name, 0) + 1
        if "for_each" not in body:
            problems.append(f"{where} > dynamic {name}: for_each is missing")
        for content in body.get("content", []):
            problems += check_body(content, blocks[name], f"{where} > {name}", meta=False)
    return problems


def _check_meta(key: str, value: Any, where: str) -> list[str]:
    if key != "lifecycle" or not is_block_list(value):
        return []
    unknown = {k for block in value for k, _ in body_items(block)} - LIFECYCLE_KEYS
    return [f"{where}: unknown lifecycle setting {k!r}" for k in sorted(unknown)]


def _missing(arguments: dict, blocks: dict, present: dict[str, int], where: str) -> list[str]:
    problems = [
        f"{where}: required argument {name!r} is missing"
        for name, spec in arguments.items()
        if spec.get("required") and name not in present
    ]
    problems += [
        f"{where}: required block {name!r} is missing"
        for name, spec in blocks.items()
        if spec.get("required") and name not in present
    ]
    return problems


def _suggest(name: str, candidates: Any) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_typed_blocks(module: Module, schemas: Schemas) -> list[str]:
    problems = []
    for kind, group in (("resource", module.resources), ("data", module.data)):
        for (type_name, _), item in group.items():
            schema = schemas.block_type(kind, type_name)
            if schema is None:
                problems.append(_unknown_type(kind, type_name, item.where, schemas))
            else:
                problems += check_body(item.body, schema, item.where, meta=True)
    return problems


def _unknown_type(kind: str, type_name: str, where: str, schemas: Schemas) -> str:
    hint = _suggest(type_name, schemas.names(kind))
    if schemas.provider_of(type_name) is not None and not hint:
        hint = (
            f" (not in {SCHEMA_DIR.name}/; if the provider has it, regenerate the subset:"
            " python tests/tfcheck.py subset --source …)"
        )
    return f"{where}: unknown {kind} type {type_name!r}{hint}"


# --------------------------------------------------------------------------------------------
# Checking references
# --------------------------------------------------------------------------------------------


def check_references(module: Module, schemas: Schemas, children: dict[str, Module]) -> list[str]:
    problems = []
    for item in module.all_items():
        for expression in expressions(item.body):
            for segments in traversals(expression):
                problem = _check_reference(segments, module, schemas, children)
                if problem:
                    problems.append(f"{item.where}: {problem}")
    return sorted(set(problems))


def _check_reference(
    segments: list[str], module: Module, schemas: Schemas, children: dict[str, Module]
) -> str | None:
    root, rest = segments[0], segments[1:]
    name = rest[0] if rest and rest[0] != "[]" else None
    if root == "var" and name is not None and name not in module.variables:
        return f"var.{name} is not declared"
    if root == "local" and name is not None and name not in module.locals:
        return f"local.{name} is not defined"
    if root == "module" and name is not None:
        return _check_module_output(name, rest[1:], module, children)
    if root == "data" and len(rest) >= 2:
        return _check_instance("data", rest[0], rest[1], rest[2:], module.data, schemas)
    if schemas.provider_of(root) is not None and rest:
        return _check_instance("resource", root, rest[0], rest[1:], module.resources, schemas)
    return None


def _check_module_output(
    name: str, rest: list[str], module: Module, children: dict[str, Module]
) -> str | None:
    if name not in module.modules:
        return f"module.{name} is not declared"
    attrs = [s for s in rest if s != "[]"]
    child = children.get(name)
    if child is not None and attrs and attrs[0] not in child.outputs:
        return f"module.{name} has no output {attrs[0]!r}"
    return None


def _check_instance(
    kind: str, type_name: str, name: str, path: list[str], declared: dict, schemas: Schemas
) -> str | None:
    label = f"{'data.' if kind == 'data' else ''}{type_name}.{name}"
    schema = schemas.block_type(kind, type_name)
    if schema is None:
        return f"{label}: unknown {kind} type {type_name!r}"
    if (type_name, name) not in declared:
        return f"{label} is not declared in this module"
    node: Any = schema.get("readable", {})
    for segment in path:
        if segment == "[]":
            continue
        if not isinstance(node, dict):
            return None  # a map or object attribute: its keys are not in the schema
        if segment not in node:
            return f"{label} has no attribute {segment!r}{_suggest(segment, node)}"
        node = node[segment]
    return None


# --------------------------------------------------------------------------------------------
# Variables, outputs, module calls, providers and versions
# --------------------------------------------------------------------------------------------


def check_declarations(module: Module) -> list[str]:
    problems = []
    for item in module.variables.values():
        problems += [
            f"{item.where}: no {key}" for key in ("type", "description") if key not in item.body
        ]
    for item in module.outputs.values():
        problems += [
            f"{item.where}: no {key}" for key in ("value", "description") if key not in item.body
        ]
    return problems


def check_module_calls(module: Module, children: dict[str, Module]) -> list[str]:
    problems = []
    for name, item in module.modules.items():
        child = children.get(name)
        if child is None:
            problems.append(f"{item.where}: source is not a local module that can be read")
            continue
        given = {k for k, _ in body_items(item.body)} - MODULE_META
        for key in sorted(given - set(child.variables)):
            problems.append(
                f"{item.where}: the module has no input {key!r}{_suggest(key, child.variables)}"
            )
        required = {n for n, v in child.variables.items() if "default" not in v.body}
        for key in sorted(required - given):
            problems.append(f"{item.where}: required input {key!r} is missing")
    return problems


def load_children(module: Module) -> dict[str, Module]:
    children = {}
    for name, item in module.modules.items():
        source = literal(item.body.get("source"))
        if source and source.startswith(("./", "../")):
            children[name] = load_module((module.path / source).resolve())
    return children


def required_providers(module: Module) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for item in module.terraform:
        for block in item.body.get("required_providers", []):
            for name, spec in body_items(block):
                if isinstance(spec, dict):
                    found[name] = {k: literal(v) or "" for k, v in spec.items()}
    return found


def check_providers(module: Module, schemas: Schemas) -> list[str]:
    problems = []
    declared = required_providers(module)
    for name, spec in declared.items():
        schema = schemas.by_provider.get(name)
        if schema is None:
            problems.append(f"{module.path.name}: provider {name!r} has no schema")
            continue
        if spec.get("source") != f"hashicorp/{name}":
            problems.append(
                f"provider {name}: source {spec.get('source')!r} is not hashicorp/{name}"
            )
        if not version_admits(spec.get("version", ""), schema["version"]):
            problems.append(
                f"provider {name}: version {spec.get('version')!r} does not admit "
                f"{schema['version']}, the version the schema is from"
            )
    used = {schemas.provider_of(t) for t, _ in [*module.resources, *module.data]}
    for name in sorted(p for p in used if p and p not in declared):
        problems.append(f"{module.path.name}: uses provider {name} without required_providers")
    for name, item in module.providers:
        schema = schemas.by_provider.get(name)
        config = schema["provider_config"] if schema else {}
        config = {**config, "arguments": {**config.get("arguments", {}), "alias": {}}}
        problems += check_body(item.body, config, item.where, meta=False)
    return problems


def version_admits(constraints: str, version: str) -> bool:
    """Terraform's version constraint syntax: '>= 6.0, < 9.0', '~> 2.4', '= 1.2.3'."""
    if not constraints.strip():
        return True
    have = _version(version)
    return all(_admits(c.strip(), have) for c in constraints.split(","))


def _admits(constraint: str, have: tuple[int, ...]) -> bool:
    match = re.fullmatch(r"(~>|>=|<=|!=|=|>|<)?\s*v?([0-9][0-9.]*)", constraint)
    if not match:
        raise ValueError(f"not a version constraint: {constraint!r}")
    op, text = match.group(1) or "=", match.group(2)
    want = _version(text)
    if op == "~>":
        parts = [int(p) for p in text.split(".")]
        upper = (*parts[:-2], parts[-2] + 1) if len(parts) > 1 else (parts[0] + 1,)
        return have >= want and have < _version(".".join(map(str, upper)))
    return {
        "=": have == want,
        "!=": have != want,
        ">": have > want,
        ">=": have >= want,
        "<": have < want,
        "<=": have <= want,
    }[op]


def _version(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in text.split("-")[0].split(".") if p]
    return tuple(parts + [0] * (3 - len(parts)))


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def check(path: Path, schemas: Schemas | None = None) -> list[str]:
    """Every problem found in the module at path (and in the modules it calls by local path)."""
    schemas = schemas or Schemas.load()
    module = load_module(path)
    children = load_children(module)
    problems = list(module.problems)
    for child in children.values():
        problems += child.problems
    problems += check_typed_blocks(module, schemas)
    problems += check_references(module, schemas, children)
    problems += check_declarations(module)
    problems += check_module_calls(module, children)
    problems += check_providers(module, schemas)
    return problems


def used_types(paths: list[Path]) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {"resource": set(), "data": set()}
    for path in paths:
        module = load_module(path)
        used["resource"] |= {t for t, _ in module.resources}
        used["data"] |= {t for t, _ in module.data}
    return used


def subset(source: Path, paths: list[Path]) -> dict[str, dict[str, Any]]:
    """The part of the full schemas in source that the modules at paths use, per provider."""
    used = used_types(paths)
    result = {}
    for provider in PROVIDERS:
        full = json.loads((source / f"{provider}.json").read_text())
        result[provider] = {
            "provider": full["provider"],
            "version": full["version"],
            "provider_config": full["provider_config"],
            "resource": {
                t: full["resource"][t] for t in sorted(used["resource"]) if t in full["resource"]
            },
            "data": {t: full["data"][t] for t in sorted(used["data"]) if t in full["data"]},
        }
    return result


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, sort_keys=True) + "\n"


def module_paths(root: Path) -> list[Path]:
    """The module and each of its examples."""
    return [root, *sorted(p for p in (root / "examples").glob("*") if p.is_dir())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("check", help="check modules against the schema subset")
    run.add_argument("paths", nargs="+", type=Path)
    make = commands.add_parser("subset", help="rewrite the schema subset from full schemas")
    make.add_argument("--source", type=Path, required=True, help="folder of the full schemas")
    make.add_argument("--module", type=Path, default=Path("terraform"))
    args = parser.parse_args(argv)
    if args.command == "subset":
        for provider, schema in subset(args.source, module_paths(args.module)).items():
            (SCHEMA_DIR / f"{provider}.json").write_text(render(schema))
        return 0
    problems = [p for path in args.paths for p in check(path)]
    print("\n".join(problems) or "no problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
