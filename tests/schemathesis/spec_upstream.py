#!/usr/bin/env python3
"""A permissive upstream that answers what an OpenAPI spec documents.

    spec_upstream.py SPEC PORT_FILE

Serves on 127.0.0.1 (a free port, written to PORT_FILE once listening).
Every request whose method and path match an operation of SPEC is answered
with that operation's success status (its lowest 2xx) and, if the spec
gives that answer a JSON schema, a body built to match it (required and
optional properties, formats, enums, bounds). A path once deleted (a
DELETE answered with success) and the paths below it answer 404 from then
on, as a resource that is gone does. Anything else gets 404. It never looks
at the request's body or query: the gateway in front of it is what
Schemathesis tests. Standard library and PyYAML only (schemathesis
brings PyYAML).
"""

import json
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def resolve(spec, node, depth=0):
    """Follows local $refs at the top of node."""
    while isinstance(node, dict) and "$ref" in node and depth < 32:
        target = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
        depth += 1
    return node


def sample(spec, schema, depth=0):
    """A value matching schema (the subset of JSON Schema specs use)."""
    schema = resolve(spec, schema or {})
    if depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "allOf" in schema:
        merged = {"type": "object", "properties": {}, "required": []}
        for part in schema["allOf"]:
            part = resolve(spec, part)
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        return sample(spec, merged, depth + 1)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return sample(spec, schema[key][0], depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: sample(spec, prop, depth + 1) for name, prop in props.items()}
    if kind == "array":
        count = schema.get("minItems", 1)
        return [sample(spec, schema.get("items", {}), depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    formats = {
        "date-time": "2026-01-01T00:00:00Z",
        "date": "2026-01-01",
        "email": "someone@example.com",
        "uri": "https://example.com/",
        "url": "https://example.com/",
        "uuid": "00000000-0000-4000-8000-000000000000",
    }
    text = formats.get(schema.get("format"), "x")
    return text + "x" * max(0, schema.get("minLength", 0) - len(text))


def routes(spec):
    """(method, compiled path regex, status, body or None) per operation."""
    out = []
    for path, item in spec.get("paths", {}).items():
        item = resolve(spec, item)
        pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
        for method in METHODS:
            op = item.get(method)
            if not op:
                continue
            codes = sorted(c for c in op.get("responses", {}) if re.fullmatch(r"2\d\d", str(c)))
            status = int(codes[0]) if codes else 200
            body = None
            if codes:
                response = resolve(spec, op["responses"][codes[0]])
                content = response.get("content", {})
                media = next((m for m in content if m.split(";")[0].strip().endswith("json")), None)
                if media is not None and status not in (204, 205):
                    body = json.dumps(sample(spec, content[media].get("schema", {}))).encode()
            out.append((method.upper(), pattern, status, body))
    return out


def main():
    spec_path, port_file = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    table = routes(spec)
    deleted = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            path = self.path.split("?", 1)[0]
            gone = any(path == d or path.startswith(d + "/") for d in deleted)
            for method, pattern, status, body in table:
                if method == self.command and pattern.match(path) and not gone:
                    break
            else:
                status, body = 404, json.dumps({"message": "not found"}).encode()
            if self.command == "DELETE" and status < 300:
                deleted.add(path)
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
            elif status not in (204, 304):
                self.send_header("Content-Length", "0")
            self.end_headers()
            if body is not None and self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
