"""A small JSON Schema validator for the subset our AsyncAPI document uses (jsonschema is not a dependency).

Supports: type, enum, const, properties, required, additionalProperties, items (a schema, or a list for tuples
with additionalItems), minItems/maxItems, pattern, anyOf, allOf, oneOf and local `$ref`s (`#/a/b`). Keywords it
does not know are ignored, as JSON Schema says, except the ones listed in UNSUPPORTED: meeting one of those is an
error, so a schema cannot pass here only because a constraint was silently skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

UNSUPPORTED = frozenset({"not", "if", "then", "else", "patternProperties", "dependentSchemas", "prefixItems"})

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def resolve(root: dict[str, Any], ref: str) -> Any:
    """The value a local `$ref` ("#/components/schemas/X") points to; KeyError if it points nowhere."""
    if not ref.startswith("#/"):
        raise ValueError(f"only local refs are supported: {ref}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> Iterator[str]:
    """Every `$ref` string anywhere in `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def errors(schema: Any, value: Any, root: dict[str, Any], path: str = "$") -> list[str]:
    """Why `value` does not match `schema` (empty when it does); refs resolve against `root`."""
    if schema is True or schema == {}:
        return []
    if schema is False:
        return [f"{path}: no value is allowed here"]
    unknown = UNSUPPORTED & schema.keys()
    if unknown:
        raise ValueError(f"{path}: unsupported keywords {sorted(unknown)}")
    if "$ref" in schema:
        return errors(resolve(root, schema["$ref"]), value, root, path)
    found: list[str] = []
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[name](value) for name in allowed):
            return [f"{path}: {value!r} is not of type {schema['type']}"]
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        found.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and not _same(value, schema["const"]):
        found.append(f"{path}: {value!r} is not {schema['const']!r}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        found.append(f"{path}: {value!r} does not match {schema['pattern']}")
    for sub in schema.get("allOf", []):
        found += errors(sub, value, root, path)
    if "anyOf" in schema and all(errors(sub, value, root, path) for sub in schema["anyOf"]):
        found.append(f"{path}: {value!r} matches none of anyOf")
    if "oneOf" in schema and sum(not errors(sub, value, root, path) for sub in schema["oneOf"]) != 1:
        found.append(f"{path}: {value!r} does not match exactly one of oneOf")
    if isinstance(value, dict):
        found += _object_errors(schema, value, root, path)
    if isinstance(value, list):
        found += _array_errors(schema, value, root, path)
    return found


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and bool(a == b)  # JSON: 1 is not true, 1 is not 1.0 for enum purposes here


def _object_errors(schema: dict[str, Any], value: dict[str, Any], root: dict[str, Any], path: str) -> list[str]:
    found = [f"{path}: missing required {name!r}" for name in schema.get("required", []) if name not in value]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            found += errors(properties[key], item, root, f"{path}.{key}")
        else:
            found += errors(extra, item, root, f"{path}.{key}")
    return found


def _array_errors(schema: dict[str, Any], value: list[Any], root: dict[str, Any], path: str) -> list[str]:
    found: list[str] = []
    if len(value) < schema.get("minItems", 0):
        found.append(f"{path}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        found.append(f"{path}: more than {schema['maxItems']} items")
    items = schema.get("items", True)
    if isinstance(items, list):  # draft-07 tuple
        for index, item in enumerate(value):
            sub = items[index] if index < len(items) else schema.get("additionalItems", True)
            found += errors(sub, item, root, f"{path}[{index}]")
    else:
        for index, item in enumerate(value):
            found += errors(items, item, root, f"{path}[{index}]")
    return found
